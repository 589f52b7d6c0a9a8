"""AdamW over the flat parameter buffer, the learning-rate schedule, gradient clipping."""
import math

import numpy as np

from . import kernels


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), updating the flat buffer in place.

    For each parameter p with gradient g, at step t (from 1):
      m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
      p -= lr * ( (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * p * decays )
    The decay is applied to the parameter directly, not added to the gradient, so Adam's
    scaling does not shrink it. `decay_runs`, [(start, stop, decays)] covering the flat buffer
    (see Parameters.runs), chooses which entries decay; by default all do.

    `span` = (start, stop) limits the optimizer to that part of the flat buffer, with moments
    m, v of stop - start entries: one rank's shard under ZeRO stage 1 (see numpygpt.dist).
    """

    def __init__(self, params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decay_runs=None,
                 span=None):
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.start, self.stop = span or (0, params.data.size)
        self.decay_runs = runs_within(decay_runs or [(0, params.data.size, True)], self.start, self.stop)
        self.m = np.zeros(self.stop - self.start, dtype=params.data.dtype)
        self.v = np.zeros_like(self.m)
        self.step_count = 0

    def step(self, lr=None, grad=None):
        """One update from params.grad (or `grad`, the gradient of the span alone); `lr`
        overrides the learning rate for this step."""
        self.step_count += 1
        p, m, v = self.params.data[self.start:self.stop], self.m, self.v
        g = self.params.grad[self.start:self.stop] if grad is None else grad
        for start, stop, decays in self.decay_runs:
            kernels.adamw(p[start:stop], g[start:stop], m[start:stop], v[start:stop],
                          self.weight_decay if decays else 0.0, self.lr if lr is None else lr,
                          self.beta1, self.beta2, self.eps, self.step_count)

    def state_dict(self) -> dict:
        return {"m": self.m.copy(), "v": self.v.copy(), "step": self.step_count}

    def load_state_dict(self, state: dict):
        for key in ("m", "v"):
            if state[key].shape != self.m.shape:
                raise ValueError(f"optimizer state {key} has {state[key].shape[0]} entries, "
                                 f"the model has {self.m.shape[0]}")
            getattr(self, key)[...] = state[key]
        self.step_count = int(state["step"])


def runs_within(runs: list, start: int, stop: int) -> list:
    """[(start, stop, flag)] runs cut to [start, stop) and counted from start: which parts of
    one shard of the flat buffer decay. Runs outside the shard drop out."""
    cut = [(max(a, start) - start, min(b, stop) - start, flag) for a, b, flag in runs]
    return [(a, b, flag) for a, b, flag in cut if a < b]


def cosine_lr(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warmup from ~0 to max_lr over warmup_steps, then a cosine down to min_lr at
    total_steps, and min_lr after. `step` counts from 0."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(grad: np.ndarray, max_norm: float, sum_of_squares: float | None = None) -> float:
    """Scale the flat gradient in place so its global L2 norm is at most max_norm.
    Returns the norm before clipping (useful to log: spikes show instability).
    sum_of_squares: of the whole gradient, when `grad` is only a shard of it (ZeRO-1)."""
    if sum_of_squares is None:
        sum_of_squares = kernels.sum_of_squares(grad)
    norm = math.sqrt(sum_of_squares)
    if max_norm > 0 and norm > max_norm:
        grad *= max_norm / (norm + 1e-6)
    return norm
