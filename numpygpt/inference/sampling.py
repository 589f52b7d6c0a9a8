"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus).

Everything here works on any logits (B, V), one row per sequence, and takes its randomness
from the numpy Generator it is given, so a seed fixes the text. Nothing here knows about the
model: generation, a server or a notebook can all use it.

The filters are applied in the usual order: temperature reshapes the distribution, top-k keeps
the k most likely tokens, top-p keeps the most likely tokens until their mass reaches p (of
what top-k left). Both filters are defined by comparing probabilities, never by the order a
sort happens to give equal values, so a token is kept or dropped for the same reason whatever
its id:
    top-k keeps token t  when fewer than k tokens are strictly more likely than t;
    top-p keeps token t  when the tokens strictly more likely than t hold less than p.
The second is the smallest set whose mass reaches p, including the token that crosses p (and
any token tied with it).
"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


def softmax(logits):
    """logits: (B, V) -> probabilities (B, V) float64. A -inf logit gets probability 0."""
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def top_k_filter(logits, k):
    """logits: (B, V) -> a copy where every token outside the k most likely is -inf."""
    if k >= logits.shape[-1]:
        return logits.copy()
    kth_largest = np.partition(logits, -k, axis=-1)[:, -k, None]           # (B, 1)
    return np.where(logits < kth_largest, -np.inf, logits)


def top_p_filter(logits, p):
    """logits: (B, V) -> a copy where every token outside the nucleus of mass p is -inf."""
    probs = softmax(logits)
    descending = -np.sort(-probs, axis=-1)
    mass_before = np.cumsum(descending, axis=-1) - descending              # (B, V)
    # The token that crosses p is the last one whose predecessors hold less than p.
    crossing = (mass_before < p).sum(axis=-1, keepdims=True) - 1            # (B, 1)
    cutoff = np.take_along_axis(descending, crossing, axis=-1)
    return np.where(probs < cutoff, -np.inf, logits)


def draw(probs, rng):
    """probs: (B, V), each row summing to 1 -> (B,) int64 token ids, one draw per row.

    Inverse transform sampling: the first token whose cumulative mass exceeds a uniform u. A
    token of probability 0 adds nothing to the cumulative mass, so it can never be first.
    """
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]                  # u < total
    return (cdf <= u).sum(axis=-1)


@dataclass(frozen=True)
class Sampler:
    """How to pick each next token.

    temperature: divides the logits; 0 means greedy (always the most likely token).
    top_k: keep only the k most likely tokens (None: all).
    top_p: keep only the nucleus of mass p, in (0, 1] (1: all).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0:  # also rejects NaN
            raise ConfigError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    def __call__(self, logits, rng):
        """logits: (B, V) float; rng: numpy Generator -> (B,) int64 token ids."""
        if self.temperature == 0:
            return np.argmax(logits, axis=-1)
        logits = logits.astype(np.float64) / self.temperature
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p < 1:
            logits = top_p_filter(logits, self.top_p)
        return draw(softmax(logits), rng)
