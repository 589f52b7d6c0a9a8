"""What a training run is told: TrainConfig, and the defaults each model preset trains with.

Every field of TrainConfig is a flag of `numpygpt train` (`--batch-size` for batch_size), with
its help text from the field's metadata. A value not given on the command line comes from the
preset (TRAIN_PRESETS, or FINE_TUNING for `--init-from`), else from the field's default.
"""
import math
from dataclasses import dataclass, field, fields

from ..errors import ConfigError


def setting(default, help: str):
    return field(default=default, metadata={"help": help})


# Settings that count something a run cannot have none of (None, where allowed, means "default").
AT_LEAST_ONE = ("steps", "batch_size", "block_size", "grad_accum", "eval_interval", "eval_iters", "log_interval",
                "lr_decay_steps", "early_stop")


@dataclass
class TrainConfig:
    steps: int = setting(2000, "optimizer steps in all")
    batch_size: int = setting(16, "windows per micro-batch (per rank under mpiexec)")
    block_size: int = setting(128, "tokens per window, at most the model's context")
    lr: float = setting(1e-3, "peak learning rate")
    min_lr: float | None = setting(None, "learning rate at the end of the cosine decay (default: lr / 10)")
    warmup_steps: int = setting(100, "steps of linear warmup from 0 to lr")
    lr_decay_steps: int | None = setting(None, "steps of the cosine decay to min_lr (default: --steps)")
    weight_decay: float = setting(0.1, "AdamW's decoupled weight decay of matrices and embeddings")
    beta1: float = setting(0.9, "AdamW's decay of the gradient's running mean")
    beta2: float = setting(0.99, "AdamW's decay of the squared gradient's running mean")
    grad_clip: float = setting(1.0, "clip the gradient's global norm to this (0: never)")
    grad_accum: int = setting(1, "micro-batches summed into each optimizer step")
    eval_interval: int = setting(250, "steps between evaluations, each followed by a checkpoint")
    eval_iters: int = setting(20, "batches of each split per evaluation")
    log_interval: int = setting(10, "steps between the lines of metrics.jsonl")
    early_stop: int | None = setting(None, "end the run after this many evaluations without a lower "
                                           "validation loss (default: never)")
    sample_tokens: int = setting(120, "tokens of the sample shown at each evaluation (0: none)")
    seed: int = setting(1337, "seeds the model's initialisation, the batches and dropout")

    def __post_init__(self):
        for name in AT_LEAST_ONE:
            self._check(name, getattr(self, name) is None or getattr(self, name) >= 1, "at least 1")
        for name in ("warmup_steps", "sample_tokens"):
            self._check(name, getattr(self, name) >= 0, "0 or more")
        self._check("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number")
        self._check("min_lr", self.min_lr is None or (math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr),
                    f"in 0..lr ({self.lr})")
        for name in ("weight_decay", "grad_clip"):
            self._check(name, math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, "0 or more")
        for name in ("beta1", "beta2"):
            self._check(name, 0 <= getattr(self, name) < 1, "in [0, 1)")

    def _check(self, name: str, ok: bool, rule: str):
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size * self.grad_accum

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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

# Fine-tuning released weights (`--init-from`): a small constant learning rate, no warmup (the
# weights are not random, so there is no early instability to wait out) and no dropout (a few
# hundred steps on a small text do not overfit a model trained on 40 GB), at the model's own
# context, as nanoGPT's and Hugging Face's fine-tuning recipes do. Evaluations come often,
# since such a run is short and its best checkpoint is the one to keep.
FINE_TUNING = {"batch_size": 4, "lr": 3e-5, "warmup_steps": 0, "dropout": 0.0, "steps": 500, "eval_interval": 50,
               "eval_iters": 10}  # and min_lr = lr (see numpygpt.commands.train)


def train_preset(model_name: str) -> dict:
    """The training defaults of a model preset (a copy)."""
    return dict(TRAIN_PRESETS.get(model_name, TRAIN_PRESETS["gpt2"]))


def training_memory(model_config, batch_size: int, block_size: int) -> int:
    """Bytes a training step holds at its peak, roughly: parameters, gradients and AdamW's two
    moments (4 per parameter), and per layer the activations backward needs (about 21 of
    width C and 2 attention squares per token), and the logits."""
    c, h, t, v, n = model_config.n_embd, model_config.n_head, block_size, model_config.vocab_size, model_config.n_layer
    parameters = 12 * n * c * c + (v + model_config.block_size) * c
    activations = n * (21 * batch_size * t * c + 2 * batch_size * h * t * t) + batch_size * t * v
    return (4 * parameters + activations) * (8 if model_config.dtype == "float64" else 4)
