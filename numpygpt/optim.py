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
    """

    def __init__(self, params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decay_runs=None):
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.decay_runs = decay_runs or [(0, params.data.size, True)]
        self.m = np.zeros_like(params.data)
        self.v = np.zeros_like(params.data)
        self.step_count = 0

    def step(self, lr=None):
        """One update from params.grad; `lr` overrides the learning rate for this step."""
        self.step_count += 1
        p, g, m, v = self.params.data, self.params.grad, self.m, self.v
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


def cosine_lr(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warmup from ~0 to max_lr over warmup_steps, then a cosine down to min_lr at
    total_steps, and min_lr after. `step` counts from 0."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale the flat gradient in place so its global L2 norm is at most max_norm.
    Returns the norm before clipping (useful to log: spikes show instability)."""
    norm = math.sqrt(kernels.sum_of_squares(grad))
    if max_norm > 0 and norm > max_norm:
        grad *= max_norm / (norm + 1e-6)
    return norm
