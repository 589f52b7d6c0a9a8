"""Softmax cross-entropy over the vocabulary, fused and in place."""
import numpy as np

from . import kernels


class SoftmaxCrossEntropy:
    """Mean of -log softmax(logits)[target] over the rows whose target is not `ignore_index`.

    The (N, V) logits are by far the largest activation of a small model, so this layer owns
    them: forward overwrites the logits with the probabilities, and backward overwrites those
    with dL/dlogits. The B*T*V array exists once, never as logits + probs + grad.
    """

    def __init__(self, ignore_index=-1):
        self.ignore_index = ignore_index

    def forward(self, logits, targets):
        """logits: (N, V) float, overwritten; targets: (N,) int. Returns the mean loss (float)."""
        self.targets = np.ascontiguousarray(targets.reshape(-1), dtype=np.int64)
        n, v = logits.shape
        if self.targets.shape[0] != n:
            raise ValueError(f"{n} rows of logits but {self.targets.shape[0]} targets")
        kept = self.targets != self.ignore_index
        if np.any((self.targets[kept] < 0) | (self.targets[kept] >= v)):
            raise ValueError(f"targets must be in [0, {v}) or the ignore index {self.ignore_index}")
        self.n_kept = int(kept.sum())
        row_losses = np.empty(n, dtype=np.float64)
        kernels.cross_entropy_forward(logits, self.targets, self.ignore_index, row_losses)
        self.probs = logits
        return float(row_losses.sum() / max(self.n_kept, 1))

    def backward(self, dloss=1.0):
        """Returns dlogits (N, V), written over the probabilities.

        L = (1/n) sum_rows [logsumexp(z) - z[target]], and d logsumexp(z)/dz = softmax(z) = p, so
          dL/dz = dloss * (p - onehot(target)) / n      on kept rows, 0 on ignored rows.
        """
        probs, self.probs = self.probs, None  # becomes dlogits, owned by the caller from here
        kernels.cross_entropy_backward(probs, self.targets, self.ignore_index, dloss / max(self.n_kept, 1))
        return probs
