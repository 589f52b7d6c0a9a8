"""The training loop: batches -> loss -> backward -> clip -> AdamW, with evaluation, progress,
metrics, checkpoints, exact resume, Ctrl-C and NaN handling.

Determinism: three generators, each seeded from `seed` and saved in every checkpoint, drive
all randomness (model init, which windows make each batch, dropout masks). The same seed,
data and settings give the same losses bit for bit, and a resumed run continues exactly where
the saved one stopped.

Data parallel (numpygpt.dist): under `mpiexec -n N` every rank runs this same loop on its rows
of each global batch of N * batch_size windows; the communicator averages the gradients,
losses and evaluations, and rank 0 alone prints, logs and writes checkpoints. One process
uses a communicator whose collectives do nothing.
"""
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import checkpoint
from .data import Dataset, get_batch
from .dist import Communicator, data_parallel_optimizer
from .generate import generate
from .model import GPT, is_decayed
from .optim import cosine_lr
from .sampling import Sampler


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    block_size: int = 128
    lr: float = 1e-3
    min_lr: float | None = None         # default lr / 10
    warmup_steps: int = 100
    lr_decay_steps: int | None = None   # default: steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    sample_tokens: int = 120
    seed: int = 1337

    def __post_init__(self):
        positive = ("batch_size", "block_size", "grad_accum", "eval_interval", "eval_iters")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "warmup_steps", "sample_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--weight-decay and --grad-clip must not be negative")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size * self.grad_accum

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class TrainingError(Exception):
    """A run that cannot go on (a non-finite loss); the message says what was kept."""


class Progress:
    """One status line: redrawn in place on a terminal, printed every so often otherwise.
    quiet: print nothing (the ranks other than 0 of a data-parallel run)."""

    def __init__(self, total_steps: int, stream=sys.stderr, quiet: bool = False):
        self.total = total_steps
        self.stream = stream
        self.tty = stream.isatty()
        self.quiet = quiet
        self.last_print = 0.0

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float, eta_s: float):
        if self.quiet:
            return
        now = time.time()
        if not self.tty and now - self.last_print < 10 and step < self.total:
            return
        self.last_print = now
        width = 24
        done = int(width * step / max(self.total, 1))
        line = (f"[{'#' * done}{'.' * (width - done)}] step {step}/{self.total} | loss {loss:.4f} | "
                f"lr {lr:.2e} | {tokens_per_s:,.0f} tok/s | ETA {format_seconds(eta_s)}")
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def message(self, text: str):
        """A line of its own (evaluation, samples), not overwritten by the status line."""
        if self.quiet:
            return
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


def bits_per_byte(nats_per_token: float, tokens: int, utf8_bytes: int) -> float:
    """Total nats over the text / its UTF-8 bytes / ln 2: a loss that does not depend on the
    tokenizer, so models with different vocabularies compare fairly."""
    return nats_per_token * tokens / max(utf8_bytes, 1) / math.log(2)


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class StopRequest:
    """First Ctrl-C: finish the current step, save, exit. A second one interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def generator_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def generator_from_state(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng


class Trainer:
    """Owns the model, optimizer, data and generators of one run.

    trainer = Trainer(model, dataset, config, out_dir)     # then trainer.restore(ckpt) to resume
    trainer.run()

    comm: the ranks training together (numpygpt.dist; default one process); batch_size is
    per rank. zero: shard AdamW's state across the ranks (ZeRO-1). check_sync: after every
    step, check that all ranks hold bit-identical weights (a debugging aid; one small
    collective per step).
    """

    def __init__(self, model: GPT, dataset: Dataset, config: TrainConfig, out_dir, log=print,
                 sample_fn=None, run_info: dict | None = None, comm: Communicator | None = None,
                 zero: bool = False, check_sync: bool = False, on_eval=None, checkpoints: bool = True,
                 stream=sys.stderr):
        self.model = model
        self.dataset = dataset
        self.config = config
        self.out_dir = Path(out_dir)
        self.log = log
        self.sample_fn = sample_fn   # (model) -> str, a short text shown at each evaluation
        self.run_info = run_info or {}
        self.comm = comm or Communicator()
        self.check_sync = check_sync
        self.on_eval = on_eval          # (step, evaluation dict) -> None; may raise to stop the run
        self.checkpoints = checkpoints  # False: metrics only (a sweep's trials)
        self.stream = stream            # progress and evaluation lines go here
        self.tokenizer_files = checkpoint.read_tokenizer_files(dataset.tokenizer_dir)
        self.optimizer = data_parallel_optimizer(
            self.comm, model.params, zero=zero, lr=config.lr, betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay, decay_runs=model.params.runs(is_decayed))
        self.step = 0
        self.data_rng = np.random.default_rng([config.seed, 1])
        self.dropout_rng = np.random.default_rng([config.seed, 2])
        self.best_val_loss = math.inf
        self.history = []  # one dict per logged step, also appended to metrics.jsonl
        # Fixed evaluation batches, so every evaluation measures the same windows (each rank
        # its rows of them).
        eval_rng = np.random.default_rng([config.seed, 3])
        self.eval_batches = {split: [get_batch(getattr(dataset, split), self.global_batch_size,
                                               config.block_size, eval_rng, self.local_rows)
                                     for _ in range(config.eval_iters)]
                             for split in ("train", "val")}

    @property
    def global_batch_size(self) -> int:
        return self.config.batch_size * self.comm.size

    @property
    def local_rows(self) -> slice:
        return self.comm.local_rows(self.config.batch_size)

    @property
    def tokens_per_step(self) -> int:
        """Over all ranks."""
        return self.config.tokens_per_step * self.comm.size

    # -- state for checkpoints -----------------------------------------------------------------

    def train_state(self) -> dict:
        return {"train_config": asdict(self.config), "data_rng": generator_state(self.data_rng),
                "dropout_rng": generator_state(self.dropout_rng), "best_val_loss": self.best_val_loss,
                **self.run_info}

    def restore(self, ckpt: checkpoint.Checkpoint):
        """Continue from a checkpoint: weights, AdamW moments, step, generators, best loss."""
        state = ckpt.train_state
        try:
            self.optimizer.load_state_dict(ckpt.optimizer_state)
            self.step = int(state["step"])
            self.data_rng = generator_from_state(state["data_rng"])
            self.dropout_rng = generator_from_state(state["dropout_rng"])
            self.best_val_loss = float(state["best_val_loss"])
        except (KeyError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{ckpt.path} cannot be resumed: bad train state ({e})") from None

    def save(self, tags) -> Path | None:
        """Every rank must call this (ZeRO gathers the optimizer state); rank 0 writes."""
        optimizer_state = self.optimizer.state_dict()
        if self.comm.rank != 0:
            return None
        return checkpoint.save(self.out_dir, self.model, step=self.step, train_state=self.train_state(),
                               optimizer_state=optimizer_state, tokenizer_files=self.tokenizer_files, tags=tags)

    # -- the loop ----------------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        c = self.config
        min_lr = c.lr / 10 if c.min_lr is None else c.min_lr
        return cosine_lr(step, c.lr, c.warmup_steps, c.lr_decay_steps or c.steps, min_lr)

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over grad_accum micro-batches. Returns (loss, grad norm, lr),
        the loss averaged over the ranks (so a non-finite loss stops every rank alike)."""
        c = self.config
        self.model.zero_grad()
        total = 0.0
        for _ in range(c.grad_accum):
            x, y = get_batch(self.dataset.train, self.global_batch_size, c.block_size, self.data_rng,
                             self.local_rows)
            loss = self.comm.mean(self.model.loss(x, y, self.comm.dropout_rng(self.dropout_rng)))
            if not math.isfinite(loss):
                return loss, math.nan, math.nan
            # Each rank's loss is a mean over its rows: 1/size makes the ranks' summed
            # gradients the gradient of the global batch's mean.
            self.model.backward(1.0 / (c.grad_accum * self.comm.size))
            total += loss / c.grad_accum
        lr = self.lr_at(self.step)
        norm = self.optimizer.step(lr, c.grad_clip)
        return total, norm, lr

    def evaluate(self) -> dict:
        """Mean loss on the fixed batches of each split (dropout off), perplexity, bits/byte."""
        result = {}
        for split, batches in self.eval_batches.items():
            loss = self.comm.mean(float(np.mean([self.model.loss(x, y) for x, y in batches])))
            result[f"{split}_loss"] = loss
            result[f"{split}_ppl"] = math.exp(min(loss, 700))
        result["val_bpb"] = bits_per_byte(result["val_loss"], len(self.dataset.val), self.dataset.val_bytes)
        return result

    def _record(self, entry: dict):
        self.history.append(entry)
        if self.comm.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def run(self) -> dict:
        """Train from self.step to config.steps. Returns the last evaluation."""
        c = self.config
        progress = Progress(c.steps, self.stream, quiet=self.comm.rank != 0)
        last_eval = {}
        start_time, start_step = time.time(), self.step
        with StopRequest() as stop:
            while self.step < c.steps:
                self.comm.maybe_fail(self.step + 1)
                loss, norm, lr = self.train_step()
                if not math.isfinite(loss):
                    kept = checkpoint.read_pointer(self.out_dir).get("latest")
                    where = f"the last good checkpoint is {self.out_dir / kept}" if kept else "no checkpoint was written"
                    raise TrainingError(f"loss became {loss} at step {self.step + 1}; stopped, {where}. "
                                        "Try a lower --lr or --grad-clip 1.0")
                self.step += 1
                if self.check_sync:
                    self.comm.check_same(self.model.params.data, f"the weights after step {self.step}")
                elapsed = time.time() - start_time
                done = self.step - start_step
                tokens_per_s = done * self.tokens_per_step / max(elapsed, 1e-9)
                progress.update(self.step, loss, lr, tokens_per_s, elapsed / done * (c.steps - self.step))
                entry = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                         "tokens_per_s": tokens_per_s}
                if self.step % c.eval_interval == 0 or self.step == c.steps:
                    last_eval = self.evaluate()
                    entry.update(last_eval)
                    tags = ["latest"]
                    if last_eval["val_loss"] < self.best_val_loss:
                        self.best_val_loss = last_eval["val_loss"]
                        tags.append("best")
                    progress.message(
                        f"step {self.step}: train loss {last_eval['train_loss']:.4f}, val loss "
                        f"{last_eval['val_loss']:.4f} (ppl {last_eval['val_ppl']:.1f}, "
                        f"{last_eval['val_bpb']:.3f} bits/byte)")
                    if self.sample_fn is not None and c.sample_tokens and self.comm.rank == 0:
                        progress.message("--- sample ---\n" + self.sample_fn(self.model) + "\n--------------")
                    self._record(entry)
                    if self.checkpoints:
                        self.save(tags)
                    if self.on_eval is not None:
                        self.on_eval(self.step, last_eval)
                elif self.step % 10 == 0:
                    self._record(entry)
                # Ctrl-C reaches the ranks at different moments: stop where any rank saw it.
                if self.comm.any(stop.requested) and self.step < c.steps:
                    if self.checkpoints:
                        path = self.save(["latest"])
                        progress.message(f"interrupted at step {self.step}: saved {path}; continue with --resume")
                    raise KeyboardInterrupt
        return last_eval


# What each model preset trains with by default; every value is one flag away.
# "tokenizer": "train" learns a BPE of the preset's vocab_size on the training text (small
# models spend most of a step in the LM head, so a few thousand tokens beat GPT-2's 50257);
# "gpt2" uses GPT-2's own vocabulary.
TRAIN_PRESETS = {
    "shakespeare": {"tokenizer": "train", "batch_size": 16, "lr": 1e-3, "warmup_steps": 100},
    "small": {"tokenizer": "train", "batch_size": 16, "lr": 6e-4, "warmup_steps": 200},
    "tiny": {"tokenizer": "train", "batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "eval_iters": 5},
    "seed": {"tokenizer": "gpt2", "batch_size": 2, "lr": 5e-4, "warmup_steps": 100},
    "gpt2": {"tokenizer": "gpt2", "batch_size": 1, "lr": 6e-4, "warmup_steps": 100},
}


def text_sampler(tokenizer, n_tokens: int, seed: int):
    """(model) -> a short sample starting a new document, drawn with its own generator so that
    looking at samples never changes the training run."""
    prompt = [tokenizer.eot_token] if tokenizer.eot_token is not None else tokenizer.encode_ordinary("\n")

    def sample(model) -> str:
        steps = generate(model, prompt, max_new_tokens=n_tokens, sampler=Sampler(temperature=0.8, top_k=50),
                         rng=np.random.default_rng(seed), stop_token=tokenizer.eot_token,
                         n_vocab=tokenizer.n_vocab)
        return tokenizer.decode([int(t[0]) for t in steps if t[0] >= 0]).strip()
    return sample


def train_preset(model_name: str) -> dict:
    return dict(TRAIN_PRESETS.get(model_name, TRAIN_PRESETS["gpt2"]))


def plot_metrics(out_dir) -> Path | None:
    """Loss curves from out_dir/metrics.jsonl to out_dir/loss.png; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    out_dir = Path(out_dir)
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.8, alpha=0.6, label="train (batch)")
    evals = [r for r in rows if "val_loss" in r]
    ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train")
    ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out_dir / "loss.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
