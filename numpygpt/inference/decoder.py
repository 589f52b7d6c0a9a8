"""Decoding over a KV cache: sequences fed to the model a token at a time, in the slots of one
cache, with the window slid as they outgrow the context.

Without a cache every new token reruns the whole text through the model: T rows through every
matmul and O(T^2) attention, to get one row of logits. With one, each layer keeps the keys and
values of the tokens already seen, in buffers allocated once, (slots, H, block_size, D) per
layer, and a new token goes through the matmuls as one row and attends to the cached keys.
The model does the work (GPT.forward_cached, CausalSelfAttention.forward_cached); this class
only keeps the cache and each slot's tokens.

Each slot has its own length, so the same decoder serves `generate` (all slots prefilled with
one prompt and stepped together) and the server (a request joins a free slot while others are
half done, and leaves when it is finished). A step takes one new token for each of the slots
named: everything but attention treats them as one batch, so each weight matrix is read once
per step however many sequences there are.

When a slot fills the context (block_size tokens), its window slides by re-running its last
`keep` tokens (half the context by default) through one prefill. Shifting the cache instead
would be wrong for GPT-2: the position embedding is added to the residual stream before the
first layer, so every cached key and value was computed for a position the token no longer
holds. Re-prefilling is exact (the logits equal a full forward over the window), and keeping
half the context means the next block_size/2 tokens are cheap steps again, so the cost per
token stays O(T) with the model always seeing between block_size/2 and block_size tokens.

Shapes: S slots, B slots in a call, T tokens, C width, H heads, D = C / H, V vocabulary.
"""
import math

import numpy as np

from ..errors import ConfigError
from ..memory import physical_memory


def check_fits(n_slots, cache_bytes):
    """Refuse at once a cache that cannot fit in this machine's memory: NumPy would raise a
    MemoryError, or, its pages taken lazily, the system would stop the process mid-answer."""
    have = physical_memory()
    if have and cache_bytes > 0.9 * have:
        raise ConfigError(f"a KV cache for {n_slots:,} sequences at once needs about {cache_bytes / 2**30:,.1f} GiB "
                          f"and the machine has {have / 2**30:,.1f} GiB; generate fewer at a time")


class Decoder:
    """A KV cache of `n_slots` sequences, each with its own length.

    prefill(slots, ids) -> logits (B, V)    prompts (B, T) into slots, cropped to their last
                                            block_size tokens
    copy(src, dst)                          slot dst continues from where src is
    step(slots, tokens) -> logits (B, V)    one new token for each of `slots`, together
    context(slot)                           the tokens the model sees now for that slot
    slides                                  how often a window has slid (or a prompt was cropped)
    Which slots are free is the caller's business; a slot is reused by prefilling it again.
    use_cache=False runs the full forward over each window instead: the reference the tests
    and benchmarks compare the cache with; both give the same logits.
    """

    def __init__(self, model, n_slots, *, keep=None, use_cache=True):
        config = model.config
        self.model = model
        self.block_size = config.block_size
        self.keep = keep or max(1, self.block_size // 2)
        if not 1 <= self.keep <= self.block_size:
            raise ValueError(f"keep must be in 1..{self.block_size}, got {self.keep}")
        shape = (config.n_layer, n_slots, config.n_head, config.block_size, config.head_size)
        check_fits(n_slots, 2 * math.prod(shape) * np.dtype(config.dtype).itemsize if use_cache else 0)
        self.k = np.zeros(shape, dtype=config.dtype) if use_cache else None
        self.v = np.zeros(shape, dtype=config.dtype) if use_cache else None
        self.ids = np.zeros((n_slots, self.block_size), dtype=np.int64)
        self.lengths = np.zeros(n_slots, dtype=np.int64)
        self.slides = 0
        self.forward_calls = 0  # model passes run: one per prefill, one per batched step

    @property
    def n_slots(self):
        return self.lengths.shape[0]

    def context(self, slot):
        return self.ids[slot, :self.lengths[slot]]

    def prefill(self, slots, ids):
        """slots: (B,) distinct; ids: (B, T) integers, T >= 1 -> logits (B, V) after the last
        token of each row. A prompt longer than the context runs on its last block_size tokens."""
        slots, ids = np.asarray(slots, dtype=np.int64), np.asarray(ids, dtype=np.int64)
        if ids.shape[1] == 0:
            raise ValueError("nothing to prefill: give at least one token")
        if ids.shape[1] > self.block_size:
            self.slides += 1
            ids = ids[:, -self.block_size:]
        self.lengths[slots] = 0
        return self._forward(slots, ids)

    def copy(self, src, dst):
        """Make slot dst hold what slot src holds (its cache rows, tokens and length)."""
        n = self.lengths[src]
        if self.k is not None:
            self.k[:, dst, :, :n] = self.k[:, src, :, :n]
            self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.ids[dst, :n] = self.ids[src, :n]
        self.lengths[dst] = n

    def step(self, slots, tokens):
        """slots: (B,) distinct slot indices; tokens: (B,) their new tokens -> logits (B, V).

        The full slots slide their windows (one prefill of their last `keep` tokens, the new
        one included); the others go through the model together."""
        slots, tokens = np.asarray(slots, dtype=np.int64), np.asarray(tokens, dtype=np.int64)
        logits = np.empty((slots.shape[0], self.model.config.vocab_size), dtype=self.model.params.dtype)
        full = self.lengths[slots] == self.block_size
        if full.any():
            self.slides += 1
            kept = self.ids[slots[full], self.block_size - self.keep + 1:]
            logits[full] = self.prefill(slots[full], np.concatenate([kept, tokens[full, None]], axis=1))
        if not full.all():
            logits[~full] = self._forward(slots[~full], tokens[~full, None])
        return logits

    def _forward(self, slots, ids):
        """Append ids (B, T) to the slots and give the logits (B, V) after them."""
        starts = self.lengths[slots]
        self.ids[slots[:, None], starts[:, None] + np.arange(ids.shape[1])] = ids
        self.lengths[slots] = starts + ids.shape[1]
        self.forward_calls += 1
        if self.k is None:  # the reference: the full forward over each window
            return np.concatenate([self.model.forward(self.context(slot)[None])[:, -1] for slot in slots])
        return self.model.forward_cached(ids, self.k, self.v, slots, starts)
