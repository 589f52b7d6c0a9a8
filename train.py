"""Train a GPT on a text corpus: `python train.py --steps 2000`.

Reads top to bottom: settings, data, model, optimizer and loop (numpygpt.trainer), report.
Every setting has a default from the model preset (`--model`); every flag overrides one.
`mpiexec -n N python train.py ...` trains data-parallel on N ranks (numpygpt.dist).
"""
import argparse
import sys
from pathlib import Path

from numpygpt import checkpoint, dist, hf
from numpygpt.config import PRESETS, preset
from numpygpt.data import DataError, check_long_enough, load_tokenizer, prepare_dataset
from numpygpt.model import GPT
from numpygpt.safetensors import SafetensorsError
from numpygpt.shards import is_shard_dir
from numpygpt.trainer import TrainConfig, Trainer, TrainingError, plot_metrics, text_sampler, train_preset

MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "dtype")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="shakespeare", choices=sorted(PRESETS), help="model preset")
    p.add_argument("--data", help="UTF-8 text file or folder of .txt files (default: tiny Shakespeare), or "
                                  "a shard folder from python -m numpygpt.data prepare")
    p.add_argument("--tokenizer", help="'train' (BPE learnt on the training text), 'gpt2', or a folder "
                                       "with encoder.json + vocab.bpe (default: the preset's)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size when the tokenizer is trained")
    p.add_argument("--out-dir", default="out", help="where checkpoints, metrics and the plot go")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir")
    p.add_argument("--init-from", metavar="PATH", help="fine-tune a Hugging Face GPT-2 folder, or a model "
                                                       "name (gpt2, gpt2-medium, ...) in the local HF cache")
    p.add_argument("--steps", type=int, help="optimizer steps in total (default 2000)")
    for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "warmup_steps",
                 "lr_decay_steps", "eval_interval", "eval_iters", "sample_tokens", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int)
    for name in ("lr", "min_lr", "weight_decay", "dropout", "grad_clip"):
        p.add_argument("--" + name.replace("_", "-"), type=float)
    p.add_argument("--dtype", choices=["float32", "float64"])
    p.add_argument("--zero", action="store_true", help="under mpiexec: shard AdamW's state across the ranks "
                                                       "(ZeRO-1), so its memory per rank falls as 1/ranks")
    p.add_argument("--check-sync", action="store_true", help="under mpiexec: after every step, check that all "
                                                             "ranks hold bit-identical weights (debugging)")
    return p


# Errors that are the user's to fix: one line, no traceback.
USER_ERRORS = (ValueError, DataError, checkpoint.CheckpointError, SafetensorsError, TrainingError, hf.HFError,
               dist.DistError)


def given(args, names) -> dict:
    """The flags among `names` that the user set (argparse leaves the rest None)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def new_run(args):
    """Settings, data and a freshly initialised model for a new run."""
    if checkpoint.read_pointer(args.out_dir):
        raise checkpoint.CheckpointError(f"{args.out_dir} already holds a checkpoint; pass --resume to continue "
                                         "it, or --out-dir for a new run")
    defaults = train_preset(args.model)
    # Shards carry their own vocabulary: the preset's default would only be checked against it.
    tokenizer = args.tokenizer or (None if is_shard_dir(args.data) else defaults.pop("tokenizer"))
    defaults.pop("tokenizer", None)
    model_config = preset(args.model).with_(**given(args, MODEL_FLAGS), vocab_size=args.vocab_size)
    train_fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**{**defaults, "block_size": model_config.block_size,
                            **{k: v for k, v in train_fields.items() if v is not None}})
    if config.block_size > model_config.block_size:
        raise ValueError(f"--block-size {config.block_size} is longer than the model's context "
                         f"({model_config.block_size})")
    if args.init_from:
        model = hf.load(args.init_from, dtype=args.dtype or "float32", dropout=args.dropout)
        if args.block_size is not None and args.block_size > model.config.block_size:
            raise ValueError(f"--block-size {args.block_size} is longer than {args.init_from}'s context "
                             f"({model.config.block_size})")
        if config.block_size > model.config.block_size:  # the preset's default: fit the model
            config = TrainConfig(**{**vars(config), "block_size": model.config.block_size})
        folder = hf.resolve(args.init_from)
        has_vocab = (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
        tokenizer = args.tokenizer or (str(folder) if has_vocab else "gpt2")
    dataset = prepare_dataset(args.data, tokenizer, model_config.vocab_size)
    n_vocab = load_tokenizer(dataset.tokenizer_dir).n_vocab
    if args.init_from:
        if n_vocab > model.config.vocab_size:
            raise DataError(f"the tokenizer has {n_vocab} tokens but {args.init_from} only {model.config.vocab_size}")
    else:
        model = GPT(model_config.with_(vocab_size=n_vocab), seed=config.seed)
    run_info = {"data": str(Path(args.data).resolve()) if args.data else None, "model_preset": args.model,
                "init_from": args.init_from}
    return config, dataset, model, run_info, None


def resumed_run(args):
    """Settings, data and model of the run saved in --out-dir; flags may extend it (--steps)."""
    ckpt = checkpoint.load(args.out_dir)
    state = ckpt.train_state
    if "train_config" not in state or ckpt.optimizer_state is None:
        raise checkpoint.CheckpointError(f"{ckpt.path} is not a training checkpoint (no optimizer state)")
    for name, value in given(args, MODEL_FLAGS).items():
        if getattr(ckpt.config, name) != value:
            raise checkpoint.CheckpointError(f"--{name.replace('_', '-')} {value} does not match the checkpoint's "
                                             f"{getattr(ckpt.config, name)}")
    train_fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig.from_dict({**state["train_config"],
                                    **{k: v for k, v in train_fields.items() if v is not None}})
    if ckpt.tokenizer_dir is None:
        raise checkpoint.CheckpointError(f"{ckpt.path} has no tokenizer/ folder")
    data_path = args.data or state.get("data")
    dataset = prepare_dataset(data_path, str(ckpt.tokenizer_dir), vocab_size=0)  # the run's own tokenizer
    run_info = {"data": str(Path(data_path).resolve()) if data_path else None,
                "model_preset": state.get("model_preset")}
    return config, dataset, ckpt.build_model(), run_info, ckpt


def set_up(args, comm) -> tuple[Trainer, checkpoint.Checkpoint | None]:
    """The run's trainer, restored when --resume; and the checkpoint it was restored from."""
    config, dataset, model, run_info, ckpt = resumed_run(args) if args.resume else new_run(args)
    check_long_enough(dataset, config.block_size)
    sampler = text_sampler(load_tokenizer(dataset.tokenizer_dir), config.sample_tokens, config.seed)
    trainer = Trainer(model, dataset, config, args.out_dir, run_info=run_info, sample_fn=sampler,
                      comm=comm, zero=args.zero, check_sync=args.check_sync)
    if ckpt is not None:
        trainer.restore(ckpt)
    return trainer, ckpt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    comm = None
    try:
        comm = dist.world()  # one process, or every rank of `mpiexec -n N`
        say = print if comm.rank == 0 else (lambda *a, **k: None)
        trainer, ckpt = comm.set_up_together(lambda: set_up(args, comm), expected=USER_ERRORS)
        model, dataset = trainer.model, trainer.dataset
        comm.check_same(model.params.data, "the starting weights (a different checkpoint or --init-from?)")
        if ckpt is not None:
            say(f"resuming {ckpt.path} at step {trainer.step}", file=sys.stderr)
        ranks = f" over {comm.size} ranks" if comm.size > 1 else ""
        say(f"{model.num_parameters():,} parameters; {len(dataset.train):,} training tokens, "
            f"{len(dataset.val):,} validation tokens; {trainer.tokens_per_step:,} tokens per step{ranks}",
            file=sys.stderr)
        # A rank failing alone in the loop would leave the others waiting: it aborts them all.
        with comm.abort_on_error("train.py", collective=(TrainingError, dist.DistError), expected=USER_ERRORS):
            trainer.run()
    except (*USER_ERRORS, dist.PeerFailed) as e:
        if comm is None or comm.rank == 0:
            print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if comm.rank == 0:
        plot = plot_metrics(args.out_dir)
        print(f"done: checkpoint in {args.out_dir}/; metrics in {args.out_dir}/metrics.jsonl; "
              + (f"loss curve in {plot}" if plot else "pip install matplotlib for a loss-curve plot"),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
