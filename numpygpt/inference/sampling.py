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


def log_softmax(logits):
    """logits: (B, V) -> log-probabilities (B, V) float64."""
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def top_k_filter(logits, k):
    """logits: (B, V); k: an int, or (B,) ints, one per row -> a copy where every token
    outside its row's k most likely is -inf."""
    k = np.broadcast_to(np.minimum(k, logits.shape[-1]), logits.shape[:1])
    kth_largest = np.empty((logits.shape[0], 1), dtype=logits.dtype)
    for value in np.unique(k):  # rows that share a k share one partition
        rows = k == value
        kth_largest[rows] = np.partition(logits[rows], -value, axis=-1)[:, -value, None]
    return np.where(logits < kth_largest, -np.inf, logits)


def top_p_filter(logits, p):
    """logits: (B, V); p: a float, or (B,) floats, one per row -> a copy where every token
    outside its row's nucleus of mass p is -inf (a row with p = 1 keeps every token)."""
    p = np.broadcast_to(p, logits.shape[:1])[:, None]
    probs = softmax(logits)
    descending = -np.sort(-probs, axis=-1)
    mass_before = np.cumsum(descending, axis=-1) - descending              # (B, V)
    # The token that crosses p is the last one whose predecessors hold less than p.
    crossing = (mass_before < p).sum(axis=-1, keepdims=True) - 1            # (B, 1)
    cutoff = np.take_along_axis(descending, crossing, axis=-1)
    return np.where((probs < cutoff) & (p < 1), -np.inf, logits)


def draw(probs, uniforms):
    """probs: (B, V), each row summing to 1; uniforms: (B,) draws in [0, 1) -> (B,) int64
    token ids.

    Inverse transform sampling: the first token whose cumulative mass exceeds u. A token of
    probability 0 adds nothing to the cumulative mass, so it can never be first.
    """
    cdf = np.cumsum(probs, axis=-1)
    u = np.asarray(uniforms)[:, None] * cdf[:, -1:]                        # u < total
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
        return sample_rows(logits, [self] * logits.shape[0], rng)


def scaled_logits(logits, samplers):
    """logits (B, V) divided by each row's temperature, in float64: the logits a row is
    sampled from, whose log-softmax is what the server reports as a token's log-probability
    (a greedy row, temperature 0, keeps the model's own logits)."""
    temperature = np.array([s.temperature for s in samplers], dtype=np.float64)
    return logits.astype(np.float64) / np.where(temperature > 0, temperature, 1.0)[:, None]


def sample_rows(logits, samplers, rng):
    """One token per row of logits (B, V), row b by samplers[b], in one pass over the batch.

    rng: a numpy Generator, or one per row (each row then draws from its own, so a row's
    token never depends on the other rows). Returns (B,) int64. Row b's token equals
    samplers[b](logits[b:b+1], its generator)."""
    greedy = np.array([s.temperature == 0 for s in samplers])
    tokens = np.argmax(logits, axis=-1)
    sampled = np.flatnonzero(~greedy)
    if len(sampled) == 0:
        return tokens
    chosen = [samplers[i] for i in sampled]
    z = scaled_logits(logits[sampled], chosen)
    if any(s.top_k is not None for s in chosen):
        z = top_k_filter(z, np.array([s.top_k or z.shape[-1] for s in chosen]))
    if any(s.top_p < 1 for s in chosen):
        z = top_p_filter(z, np.array([s.top_p for s in chosen]))
    rngs = rng if isinstance(rng, (list, tuple)) else None
    uniforms = rng.random(len(sampled)) if rngs is None else np.array([rngs[i].random() for i in sampled])
    tokens[sampled] = draw(softmax(z), uniforms)
    return tokens
