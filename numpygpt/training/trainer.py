"""The training loop: batches -> loss -> backward -> clip -> AdamW, with evaluation, progress,
metrics, checkpoints, exact resume, Ctrl-C and NaN handling.

Determinism: three generators, each seeded from `seed` and saved in every checkpoint, drive
all randomness (model init, which windows make each batch, dropout masks). The same seed,
data and settings give the same losses bit for bit, and a resumed run continues exactly where
the saved one stopped.

Data parallel (numpygpt.dist): under `mpiexec -n N` every rank runs this same loop on its rows
of each global batch of N * batch_size windows; the communicator averages the gradients,
losses and evaluations, and rank 0 alone prints, logs and writes checkpoints. One process
uses a communicator whose collectives do nothing. Within a process, each batch is cut into one
shard per core, run by threads of their own (training.threads), unless the model is too large
to pay for the shards' gradient buffers.
"""
import json
import math
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..data import Dataset, get_batch
from ..errors import CheckpointError, TrainingError
from ..formats import atomic, checkpoint
from ..inference.generate import generate
from ..inference.sampling import Sampler
from ..memory import reuse_freed_memory
from ..model import GPT, is_decayed
from ..optim import cosine_lr
from ..progress import Progress, bar, format_seconds
from .dist import Communicator, data_parallel_optimizer
from .settings import TrainConfig
from .threads import ThreadShards, shard_count


def bits_per_byte(nats_per_token: float, tokens: int, utf8_bytes: int) -> float:
    """Total nats over the text / its UTF-8 bytes / ln 2: a loss that does not depend on the
    tokenizer, so models with different vocabularies compare fairly."""
    return nats_per_token * tokens / max(utf8_bytes, 1) / math.log(2)


class StopRequest:
    """First Ctrl-C, or SIGTERM (what docker, systemd and Slurm send): finish the current step,
    save, exit. A second one interrupts at once. One that comes during the last step is not
    lost: leaving the block raises it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.requested = True
        for s in self.SIGNALS:  # the second signal interrupts at once
            signal.signal(s, signal.default_int_handler)

    def __exit__(self, exc_type, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        if self.requested and exc_type is None:
            raise Interrupted("interrupted during the last step; the run is complete and saved")


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal, with what was saved in its message (printed by the command)."""


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
    collective per step). shards: threads to cut each batch among (training.threads); None
    picks one per core where that pays, 1 runs the model on the whole batch.
    """

    def __init__(self, model: GPT, dataset: Dataset, config: TrainConfig, out_dir, log=print,
                 sample_fn=None, run_info: dict | None = None, comm: Communicator | None = None,
                 zero: bool = False, check_sync: bool = False, on_eval=None, checkpoints: bool = True,
                 stream=None, shards: int | None = None):
        self.model = model
        shards = shard_count(model, config.batch_size) if shards is None else shards
        self.runner = ThreadShards(model, shards) if shards > 1 else model  # loss and backward
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
        self.stream = stream            # progress and evaluation lines go here (None: stderr)
        self.tokenizer_files = checkpoint.read_tokenizer_files(dataset.tokenizer_dir)
        self.optimizer = data_parallel_optimizer(
            self.comm, model.params, zero=zero, lr=config.lr, betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay, decay_runs=model.params.runs(is_decayed))
        self.step = 0
        self.data_rng = np.random.default_rng([config.seed, 1])
        self.dropout_rng = np.random.default_rng([config.seed, 2])
        self.best_val_loss = math.inf
        self.evals_since_best = 0  # for early stopping
        self.last_eval = {}        # saved with the checkpoint of the step it was made at
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
    def shards(self) -> int:
        """How many threads share each batch (training.threads); 1 without shards."""
        return self.runner.shards if isinstance(self.runner, ThreadShards) else 1

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
                "evals_since_best": self.evals_since_best,
                "evaluation": self.last_eval if self.last_eval.get("step") == self.step else None,
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
            self.evals_since_best = int(state.get("evals_since_best", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{ckpt.path} cannot be resumed: bad train state ({e})") from None
        self.truncate_metrics()

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
            loss = self.comm.mean(self.runner.loss(x, y, self.comm.dropout_rng(self.dropout_rng)))
            if not math.isfinite(loss):
                return loss, math.nan, math.nan
            # Each rank's loss is a mean over its rows: 1/size makes the ranks' summed
            # gradients the gradient of the global batch's mean.
            self.runner.backward(1.0 / (c.grad_accum * self.comm.size))
            total += loss / c.grad_accum
        lr = self.lr_at(self.step)
        norm = self.optimizer.step(lr, c.grad_clip)
        return total, norm, lr

    def evaluate(self) -> dict:
        """Mean loss on the fixed batches of each split (dropout off), perplexity, bits/byte."""
        result = {}
        for split, batches in self.eval_batches.items():
            loss = self.comm.mean(float(np.mean([self.runner.loss(x, y) for x, y in batches])))
            result[f"{split}_loss"] = loss
            result[f"{split}_ppl"] = math.exp(min(loss, 700))
        result["val_bpb"] = bits_per_byte(result["val_loss"], len(self.dataset.val), self.dataset.val_bytes)
        return result

    def _record(self, entry: dict):
        self.history.append(entry)
        if self.comm.rank != 0:
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as e:
            kept = checkpoint.read_pointer(self.out_dir).get("latest")
            raise TrainingError(f"{e.strerror or e} writing {self.out_dir / 'metrics.jsonl'}; "
                                + (f"the last checkpoint, {self.out_dir / kept}, is intact" if kept else
                                   "no checkpoint was written")) from None

    def truncate_metrics(self):
        """On resume: keep metrics.jsonl's lines up to the checkpoint's step (a crash may have
        left later ones, or half a line), so no step is logged twice."""
        path = self.out_dir / "metrics.jsonl"
        if self.comm.rank != 0 or not path.exists():
            return
        kept = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line torn by a crash ends what is kept
            if row.get("step", 0) > self.step:
                break
            kept.append(line + "\n")
        atomic.write_bytes(path, "".join(kept).encode())

    def run(self) -> dict:
        """Train from self.step to config.steps, or until early stopping ends the run.
        Returns the last evaluation."""
        c = self.config
        reuse_freed_memory()  # every step then reuses the last one's memory: no page faults
        progress = Progress(self.stream, quiet=self.comm.rank != 0)
        start_time, start_step = time.time(), self.step
        with StopRequest() as stop:
            while self.step < c.steps:
                # A diverging step overflows in its matmuls first: the loss check below says so
                # in one line, rather than NumPy in a warning per operation.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    loss, norm, lr = self.train_step()
                if not math.isfinite(loss):
                    kept = checkpoint.read_pointer(self.out_dir).get("latest")
                    where = f"the last good checkpoint is {self.out_dir / kept}" if kept else "no checkpoint was written"
                    clip = "a lower --lr" if c.grad_clip and c.grad_clip <= 1.0 else "a lower --lr or --grad-clip 1.0"
                    raise TrainingError(f"loss became {loss} at step {self.step + 1}; stopped, {where}. Try {clip}")
                self.step += 1
                if self.check_sync:
                    self.comm.check_same(self.model.params.data, f"the weights after step {self.step}")
                elapsed = time.time() - start_time
                done = self.step - start_step
                tokens_per_s = done * self.tokens_per_step / max(elapsed, 1e-9)
                progress.status(f"{bar(self.step / c.steps)} step {self.step}/{c.steps} | loss {loss:.4f} | "
                                f"lr {lr:.2e} | {tokens_per_s:,.0f} tok/s | "
                                f"ETA {format_seconds(elapsed / done * (c.steps - self.step))}",
                                force=self.step == c.steps)
                entry = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                         "tokens_per_s": tokens_per_s}
                if self.step % c.eval_interval == 0 or self.step == c.steps:
                    self.evaluate_and_save(entry, progress)
                    if c.early_stop is not None and self.evals_since_best >= c.early_stop:
                        progress.message(f"early stop at step {self.step}: the validation loss has not fallen "
                                         f"below {self.best_val_loss:.4f} in {c.early_stop} evaluations")
                        break
                elif self.step % c.log_interval == 0:
                    self._record(entry)
                # Ctrl-C reaches the ranks at different moments: stop where any rank saw it.
                if self.comm.any(stop.requested) and self.step < c.steps:
                    saved = self.save(["latest"]) if self.checkpoints else None
                    raise Interrupted(f"interrupted at step {self.step}" + (
                        f": saved {saved}; continue with --resume" if saved else ""))
        progress.close()
        return self.last_eval

    def evaluate_and_save(self, entry: dict, progress: Progress):
        """Evaluate, log, show a sample, and save the checkpoint: `latest`, and `best` too
        when the validation loss is the lowest so far."""
        evaluation = self.evaluate()
        self.last_eval = {"step": self.step, **evaluation}
        entry.update(evaluation)
        tags = ["latest"]
        if evaluation["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.evals_since_best = evaluation["val_loss"], 0
            tags.append("best")
        else:
            self.evals_since_best += 1
        progress.message(f"step {self.step}: train loss {evaluation['train_loss']:.4f}, val loss "
                         f"{evaluation['val_loss']:.4f} (ppl {evaluation['val_ppl']:.1f}, "
                         f"{evaluation['val_bpb']:.3f} bits/byte)")
        if self.sample_fn is not None and self.config.sample_tokens and self.comm.rank == 0:
            progress.message("--- sample ---\n" + self.sample_fn(self.model) + "\n--------------")
        self._record(entry)
        if self.checkpoints:
            self.save(tags)
        if self.on_eval is not None:
            self.on_eval(self.step, evaluation)


def is_metrics_log(path) -> bool:
    """Whether `path` reads as a metrics.jsonl the Trainer wrote: a JSON object with a "step"
    on every line (the last may be torn by a crash), rather than a file of someone's own."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for number, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1 and line.startswith('{"'):  # torn: the start of a row
                continue
            return False
        if not isinstance(row, dict) or "step" not in row:
            return False
    return True


def text_sampler(tokenizer, prompt: list[int], n_tokens: int, seed: int):
    """(model) -> a short sample continuing `prompt` (the start of a new text, see
    inference.loading.document_start), drawn with its own generator so that looking at
    samples never changes the training run."""

    def sample(model) -> str:
        steps = generate(model, prompt, max_new_tokens=n_tokens, sampler=Sampler(temperature=0.8, top_k=50),
                         rng=np.random.default_rng(seed), stop_token=tokenizer.eot_token,
                         n_vocab=tokenizer.n_vocab)
        return tokenizer.decode([int(t[0]) for t in steps if t[0] >= 0]).strip()
    return sample
