"""Train a GPT on a text corpus, or fine-tune released GPT-2 weights.

    numpygpt train --steps 2000                      # tiny Shakespeare, the shakespeare preset
    numpygpt train --data my.txt --model small       # any text file or folder, another preset
    numpygpt train --resume                          # continue the run saved in --out-dir
    numpygpt train --init-from gpt2 --data my.txt    # fine-tune GPT-2 (Hugging Face folder or name)
    mpiexec -n 2 numpygpt train --batch-size 8       # data parallel over 2 ranks

Checkpoints go to --out-dir: `latest` (what --resume continues) and `best` (the lowest
validation loss, what sample, serve, eval and export load by default), with metrics.jsonl
and loss.png.
"""
import typing
from pathlib import Path

from ..config import PRESETS, preset
from ..data import check_long_enough, load_dataset, load_tokenizer, shards
from ..data.tokenizers import tokenizer_folder
from ..errors import CheckpointError, ConfigError, DistError, TokenizerError, TrainingError, UserError
from ..formats import checkpoint, hf
from ..formats.checkpoint import read_tokenizer_files
from ..inference.loading import document_start
from ..memory import physical_memory
from ..model import GPT
from ..progress import Progress
from ..training import dist
from ..training.plot import plot_metrics
from ..training.settings import (AT_LEAST_ONE, FINE_TUNING, TRAIN_PRESETS, TrainConfig, train_preset,
                                 training_memory)
from ..training.trainer import Trainer, is_metrics_log, text_sampler
from .args import folder, integer, real

MODEL_FLAGS = {"n_layer": "transformer blocks", "n_head": "attention heads per block",
               "n_embd": "width of the residual stream", "dropout": "dropout probability while training"}
TRAIN_FIELDS = TrainConfig.__dataclass_fields__
FROM_PRESET = "(default: by --model, see below)"


def preset_table() -> str:
    """The epilog of --help: what each preset sets, once."""
    rows = []
    for name, settings in TRAIN_PRESETS.items():
        config = preset(name)
        shape = f"{config.n_layer} layers x {config.n_embd}, context {config.block_size}, dropout {config.dropout}"
        tokenizer = (f"a {config.vocab_size}-token BPE learnt on the text" if settings["tokenizer"] == "train"
                     else "GPT-2's tokenizer")
        rows.append(f"  {name:<12} {shape}; batch {settings['batch_size']}, lr {settings['lr']:g}, "
                    f"warmup {settings['warmup_steps']}; {tokenizer}")
    tune = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in FINE_TUNING.items())
    return ("defaults by --model (every flag overrides them):\n" + "\n".join(rows) +
            f"\n  --init-from  {tune}, constant learning rate, the model's own context")


def add_arguments(p):
    p.epilog = preset_table()
    p.add_argument("--model", choices=sorted(PRESETS), help="the model preset (default: shakespeare)")
    p.add_argument("--data", metavar="PATH",
                   help="a UTF-8 text or .jsonl file, a folder of them, or a shard folder from numpygpt prepare "
                        "(default: tiny Shakespeare, shipped in data/)")
    p.add_argument("--tokenizer", metavar="SPEC",
                   help="train (a BPE learnt on the training text), gpt2 (GPT-2's own), or a folder with "
                        "encoder.json + vocab.bpe " + FROM_PRESET)
    p.add_argument("--vocab-size", type=integer(257), metavar="N", help="tokens of a learnt BPE " + FROM_PRESET)
    p.add_argument("--out-dir", default="out", type=folder, metavar="DIR",
                   help="where checkpoints, metrics.jsonl and loss.png go")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir (flags may change "
                   "its schedule and length, e.g. --steps)")
    p.add_argument("--init-from", metavar="HF", help="fine-tune the weights of a Hugging Face GPT-2 folder or a "
                   "model name (gpt2, gpt2-medium, ...) in the local Hugging Face cache")
    for name, what in MODEL_FLAGS.items():
        kind, metavar = (real(0, 0.99), "P") if name == "dropout" else (integer(1), "N")
        p.add_argument("--" + name.replace("_", "-"), type=kind, metavar=metavar, help=f"{what} {FROM_PRESET}")
    p.add_argument("--dtype", choices=["float32", "float64"], help="float64 for gradient checks (default: float32)")
    from_preset = {key for settings in TRAIN_PRESETS.values() for key in settings} | {"block_size"}
    for name, spec in TRAIN_FIELDS.items():
        is_float = spec.type is float or float in typing.get_args(spec.type)
        help = spec.metadata["help"]
        if name in from_preset:
            help += " " + FROM_PRESET
        elif "default" not in help:
            value = f"{spec.default:g}" if is_float else spec.default
            help += f" (default: {value}{'; --init-from: see below' if name in FINE_TUNING else ''})"
        kind = real(0) if is_float else integer(1 if name in AT_LEAST_ONE else 0)
        p.add_argument("--" + name.replace("_", "-"), type=kind, metavar="N", help=help)
    p.add_argument("--zero", action="store_true", help="under mpiexec: shard AdamW's state across the ranks "
                   "(ZeRO-1), so its memory per rank falls as 1/ranks")
    p.add_argument("--check-sync", action="store_true", help="under mpiexec: after every step, check that all ranks "
                   "hold bit-identical weights (a debugging aid)")
    p.add_argument("--collective-timeout", type=real(above=0), default=600.0, metavar="S",
                   help="under mpiexec: end the job, on one line, when the ranks wait longer than this for each other "
                   "(a rank stopped or hung)")


def given(args, names) -> dict:
    """The flags among `names` that the user set (argparse leaves the rest None)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def new_run(args, say):
    """Settings, data and a freshly initialised (or pretrained) model for a new run."""
    if checkpoint.read_pointer(args.out_dir):
        raise CheckpointError(f"{args.out_dir} already holds a checkpoint; pass --resume to continue it, "
                              "or --out-dir for a new run")
    metrics = Path(args.out_dir) / "metrics.jsonl"
    if metrics.exists():  # a run that stopped before its first checkpoint left it: start afresh
        if not is_metrics_log(metrics):
            raise CheckpointError(f"{metrics} is not a training log of numpygpt; a run would write over it: "
                                  "choose another --out-dir")
        metrics.unlink(missing_ok=True)
    # --block-size is the context of a new model, and the window length of a fine-tuning run.
    model_flags = given(args, [*MODEL_FLAGS, "dtype", "block_size"])
    if args.init_from:
        shaped = [f"--{name.replace('_', '-')}" for name in ("model", "n_layer", "n_head", "n_embd")
                  if getattr(args, name) is not None]
        if shaped:
            raise ConfigError(f"{shaped[0]} does not apply to --init-from: the model's shape is the one "
                              f"{args.init_from} holds")
        defaults = dict(FINE_TUNING)
        dropout = model_flags.get("dropout", defaults.pop("dropout"))
        model = hf.load(args.init_from, dtype=args.dtype or "float32", dropout=dropout)
        model_config = model.config
        defaults["block_size"] = model_config.block_size
        folder = hf.resolve(args.init_from)
        has_vocab = (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
        tokenizer = args.tokenizer or (str(folder) if has_vocab else "gpt2")
        if args.vocab_size is not None and args.vocab_size != model_config.vocab_size:
            raise ConfigError(f"--vocab-size {args.vocab_size}: the model of --init-from has "
                              f"{model_config.vocab_size} token embeddings, and a BPE learnt for it that many ids")
    else:
        model_name = args.model or "shakespeare"
        defaults = train_preset(model_name)
        tokenizer = defaults.pop("tokenizer")
        model_config = preset(model_name).with_(**model_flags, vocab_size=args.vocab_size)
        defaults["block_size"] = model_config.block_size
        # Shards carry their own vocabulary: the preset's default would only be checked against it.
        tokenizer = args.tokenizer or (None if shards.is_shard_dir(args.data) else tokenizer)
        if args.vocab_size is not None and tokenizer != "train":
            raise ConfigError(f"--vocab-size sizes a BPE learnt with --tokenizer train; "
                              + ("the shards' vocabulary" if tokenizer is None else f"--tokenizer {tokenizer}")
                              + " has a size of its own")
    settings = {**defaults, **given(args, TRAIN_FIELDS)}
    if args.init_from and "min_lr" not in settings:
        settings["min_lr"] = settings["lr"]  # fine-tuning keeps its learning rate constant
    config = TrainConfig(**settings)
    if config.block_size > model_config.block_size:
        raise ConfigError(f"--block-size {config.block_size} is longer than the model's context "
                          f"({model_config.block_size})")
    check_memory(model_config, config)
    if args.init_from:
        say("fine-tuning " + ", ".join(f"{k} {settings[k]:g}" if isinstance(settings[k], float) else
                                       f"{k} {settings[k]}" for k in ("lr", "min_lr", "warmup_steps", "batch_size",
                                                                      "block_size", "steps"))
            + f", dropout {model_config.dropout:g} (flags override each)")
    dataset = load_dataset(args.data, tokenizer, model_config.vocab_size, say=say)
    tok = load_tokenizer(dataset.tokenizer_dir)
    if args.init_from:
        if tok.n_vocab > model_config.vocab_size:
            raise TokenizerError(f"the tokenizer has {tok.n_vocab} tokens but {args.init_from} only "
                                 f"{model_config.vocab_size}")
    else:
        model = GPT(model_config.with_(vocab_size=tok.n_vocab), seed=config.seed)
    # A model that has seen <|endoftext|> start documents can start a new text from it.
    trained_on_eot = tok.eot_token is not None and (dataset.documents > 1 or bool(args.init_from))
    run_info = {"data": str(Path(args.data).resolve()) if args.data else None,
                "model_preset": None if args.init_from else model_name,
                "init_from": args.init_from, "trained_on_eot": trained_on_eot}
    return config, dataset, model, run_info, None


def check_memory(model_config, config):
    """Refuse, at once, a run that cannot fit in this machine's memory (rather than spend
    minutes on data and initialisation, then die of a MemoryError)."""
    need = training_memory(model_config, config.batch_size, config.block_size)
    have = physical_memory()
    if have and need > 0.9 * have:
        raise ConfigError(f"this run needs about {need / 2**30:,.1f} GiB of memory and the machine has "
                          f"{have / 2**30:,.1f} GiB; use a smaller --batch-size, --block-size or model")


def resumed_run(args, say):
    """Settings, data and model of the run saved in --out-dir; flags may extend it (--steps)."""
    ckpt = checkpoint.load(args.out_dir, "latest", optimizer=True)
    state = ckpt.train_state
    if "train_config" not in state or ckpt.optimizer_state is None:
        raise CheckpointError(f"{ckpt.path} is not a training checkpoint (no optimizer state)")
    if args.model is not None and args.model != state.get("model_preset"):
        raise CheckpointError(f"--model {args.model} does not match the run's model "
                              f"({state.get('model_preset') or 'from ' + str(state.get('init_from'))})")
    if args.vocab_size is not None and args.vocab_size != ckpt.config.vocab_size:
        raise CheckpointError(f"--vocab-size {args.vocab_size} does not match the run's {ckpt.config.vocab_size}: "
                              "a resumed run keeps its tokenizer")
    if args.tokenizer not in (None, "train") and ckpt.tokenizer_dir is not None and \
            read_tokenizer_files(tokenizer_folder(args.tokenizer)) != read_tokenizer_files(ckpt.tokenizer_dir):
        raise CheckpointError(f"--tokenizer {args.tokenizer} is not the run's own: a resumed run keeps its tokenizer")
    for name, value in given(args, [*MODEL_FLAGS, "dtype", "block_size"]).items():
        if getattr(ckpt.config, name) != value:
            raise CheckpointError(f"--{name.replace('_', '-')} {value} does not match the checkpoint's "
                                  f"{getattr(ckpt.config, name)}")
    config = TrainConfig.from_dict({**state["train_config"], **given(args, TRAIN_FIELDS)})
    if config.steps <= int(state.get("step", 0)):
        raise ConfigError(f"{ckpt.path} is at step {state.get('step')} of a {config.steps}-step run already; "
                          "pass a larger --steps to train on")
    check_memory(ckpt.config, config)
    if ckpt.tokenizer_dir is None:
        raise CheckpointError(f"{ckpt.path} has no tokenizer/ folder")
    data_path = args.data or state.get("data")
    dataset = load_dataset(data_path, str(ckpt.tokenizer_dir), vocab_size=0, say=say)  # the run's own tokenizer
    run_info = {key: state.get(key) for key in ("model_preset", "init_from", "trained_on_eot")}
    run_info["data"] = str(Path(data_path).resolve()) if data_path else None
    return config, dataset, ckpt.build_model(), run_info, ckpt


def set_up(args, comm, say) -> tuple[Trainer, checkpoint.Checkpoint | None]:
    """The run's trainer, restored when --resume; and the checkpoint it was restored from."""
    if comm.rank == 0:
        checkpoint.check_writable(args.out_dir)  # now, not at the first save
    config, dataset, model, run_info, ckpt = resumed_run(args, say) if args.resume else new_run(args, say)
    check_long_enough(dataset, config.block_size)
    tok = load_tokenizer(dataset.tokenizer_dir)
    sampler = text_sampler(tok, document_start(tok, run_info["trained_on_eot"]), config.sample_tokens, config.seed)
    trainer = Trainer(model, dataset, config, args.out_dir, run_info=run_info, sample_fn=sampler,
                      comm=comm, zero=args.zero, check_sync=args.check_sync)
    if ckpt is not None:
        trainer.restore(ckpt)
    return trainer, ckpt


def run(args):
    if args.init_from == "resume":
        raise ConfigError("to continue a run, pass --resume (with its --out-dir); --init-from takes a Hugging Face "
                          "GPT-2 folder or model name")
    if args.resume and args.init_from:
        raise ConfigError("give --resume or --init-from, not both")
    comm = dist.world(args.collective_timeout, args.prog)  # one process, or every rank of `mpiexec -n N`
    try:
        return train(args, comm)
    except (UserError, KeyboardInterrupt) as e:
        if comm.rank != 0:  # every rank has it; rank 0 alone says it
            return 130 if isinstance(e, KeyboardInterrupt) else 2
        raise


def train(args, comm):
    progress = Progress(quiet=comm.rank != 0)
    trainer, ckpt = comm.set_up_together(lambda: set_up(args, comm, progress.message), expected=UserError)
    model, dataset = trainer.model, trainer.dataset
    comm.check_same(model.params.data, "the starting weights (a different checkpoint or --init-from?)")
    if ckpt is not None:
        progress.message(f"resuming {ckpt.path} at step {trainer.step}")
    ranks = f" over {comm.size} ranks" if comm.size > 1 else ""
    shards = f", each batch in {trainer.shards} shards on threads of their own" if trainer.shards > 1 else ""
    progress.message(f"{model.num_parameters():,} parameters; {len(dataset.train):,} training tokens, "
                     f"{len(dataset.val):,} validation tokens; {trainer.tokens_per_step:,} tokens per step{ranks}"
                     f"{shards}")
    # A rank failing alone in the loop would leave the others waiting: it aborts them all.
    with comm.abort_on_error(args.prog, collective=(TrainingError, DistError), expected=UserError):
        trainer.run()
    if comm.rank == 0:
        best = checkpoint.load(args.out_dir)
        plot = plot_metrics(args.out_dir)
        progress.message(f"done; the checkpoint to use: {best.summary()}; metrics in {args.out_dir}/metrics.jsonl; "
                         + (f"loss curve in {plot}" if plot else "pip install matplotlib for a loss-curve plot"))
    return 0

