"""Decoding many independent sequences at once, each in a slot of its own KV cache.

generate.Decoder steps B sequences that share one length: they start together and stop
together. A server's sequences do not: a request joins while others are half done, and leaves
when it is finished. Here the cache has a fixed number of slots, each with its own length;
a sequence is prefilled into a free slot on its own, then takes part in every batched step
until it is released.

A step takes one new token for each active slot. Everything but attention treats the B_active
tokens as one (B_active, 1, C) batch, so each weight matrix is read once per step whatever the
number of sequences: that is what makes serving 16 requests together cheaper than one after
another. Attention is the one place where the slots differ: slot b's query sees its own
positions 0..length_b and nothing beyond, which a mask over the longest slot's columns gives.

When a slot fills the context, its window slides exactly as generate.Decoder's does (re-prefill
its last `keep` tokens, the new one included), so a slot's logits are what the model's full
forward gives over the tokens it holds, the same as decoding that sequence alone.

Shapes: S slots, B active slots in a step, C width, H heads, D = C / H, V vocabulary.
"""
import math

import numpy as np

from .generate import forward_with_cache


class _SlotView:
    """One slot of the cache in the (n_layer, 1, H, block_size, D) layout forward_with_cache
    expects; k and v are views, so the prefill writes straight into the slot."""

    def __init__(self, k, v, slot):
        self.k = k[:, slot:slot + 1]
        self.v = v[:, slot:slot + 1]
        self.length = 0


class SlotDecoder:
    """A KV cache of `n_slots` sequences, each with its own length.

    prefill(slot, ids) -> logits (V,)        a sequence's prompt into a free slot
    copy(src, dst)                            dst continues from where src is (same prompt)
    step(slots, tokens) -> logits (B, V)      one new token for each of `slots`, batched
    context(slot)                             the tokens the model sees now for that slot
    Which slots are free is the caller's business; a slot is reused by prefilling it again.
    """

    def __init__(self, model, n_slots, *, keep=None):
        config = model.config
        self.model = model
        self.block_size = config.block_size
        self.keep = keep or max(1, self.block_size // 2)
        if not 1 <= self.keep <= self.block_size:
            raise ValueError(f"keep must be in 1..{self.block_size}, got {self.keep}")
        shape = (config.n_layer, n_slots, config.n_head, config.block_size, config.head_size)
        self.k = np.zeros(shape, dtype=config.dtype)
        self.v = np.zeros(shape, dtype=config.dtype)
        self.ids = np.zeros((n_slots, self.block_size), dtype=np.int64)
        self.lengths = np.zeros(n_slots, dtype=np.int64)
        self.forward_calls = 0  # model passes run: one per prefill, one per batched step

    @property
    def n_slots(self):
        return self.lengths.shape[0]

    def context(self, slot):
        return self.ids[slot, :self.lengths[slot]]

    def prefill(self, slot, ids):
        """ids: (T,) integers, T >= 1 -> logits (V,) after the last one.

        A prompt longer than the context runs on its last block_size tokens.
        """
        ids = np.asarray(ids, dtype=np.int64)[-self.block_size:]
        if ids.shape[0] == 0:
            raise ValueError("nothing to prefill: give at least one token")
        view = _SlotView(self.k, self.v, slot)
        logits = forward_with_cache(self.model, ids[None, :], view)[0]
        self.forward_calls += 1
        self.lengths[slot] = ids.shape[0]
        self.ids[slot, :ids.shape[0]] = ids
        return logits

    def copy(self, src, dst):
        """Make slot dst hold what slot src holds (its cache rows, tokens and length)."""
        n = self.lengths[src]
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.ids[dst, :n] = self.ids[src, :n]
        self.lengths[dst] = n

    def step(self, slots, tokens):
        """slots: (B,) distinct slot indices; tokens: (B,) their new tokens -> logits (B, V).

        A full slot slides its window (one prefill of its own); the others go through the
        model together.
        """
        slots = np.asarray(slots, dtype=np.int64)
        tokens = np.asarray(tokens, dtype=np.int64)
        logits = np.empty((slots.shape[0], self.model.config.vocab_size), dtype=self.k.dtype)
        full = self.lengths[slots] == self.block_size
        for i in np.flatnonzero(full):
            slot = slots[i]
            kept = self.ids[slot, self.block_size - self.keep + 1:]
            logits[i] = self.prefill(slot, np.append(kept, tokens[i]))
        if not full.all():
            logits[~full] = self._batched_step(slots[~full], tokens[~full])
        return logits

    def _batched_step(self, slots, tokens):
        """slots, tokens: (B,), no slot full -> logits (B, V). Equals, row by row, the full
        forward over each slot's tokens followed by its new one."""
        model = self.model
        positions = self.lengths[slots]                                     # (B,)
        self.ids[slots, positions] = tokens
        x = model.wte.forward(tokens[:, None]) + model.wpe.forward(positions)[:, None]
        # Columns beyond a slot's own new token belong to other, longer slots (or to nothing).
        end = int(positions.max()) + 1
        hidden = np.arange(end) > positions[:, None]                        # (B, end)
        # Slots 0..B-1 in order (the common case) are a view of the cache; others a gather.
        contiguous = np.array_equal(slots, np.arange(slots.shape[0]))
        rows = slice(0, slots.shape[0]) if contiguous else slots
        for block, k_cache, v_cache in zip(model.blocks, self.k, self.v):
            attn = block.attn
            q, k, v = self._qkv(attn, block.ln_1.forward(x))                # each (B, H, D)
            k_cache[slots, :, positions] = k
            v_cache[slots, :, positions] = v
            keys, values = k_cache[rows, :, :end], v_cache[rows, :, :end]   # (B, H, end, D)
            scores = (q[:, :, None, :] @ keys.swapaxes(-1, -2))[:, :, 0]    # (B, H, end)
            scores *= 1.0 / math.sqrt(q.shape[-1])
            scores[np.broadcast_to(hidden[:, None, :], scores.shape)] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            y = (scores[:, :, None, :] @ values)[:, :, 0]                   # (B, H, D)
            x = x + attn.c_proj.forward(y.reshape(x.shape))
            x = x + block.mlp.forward(block.ln_2.forward(x), None)
        self.lengths[slots] = positions + 1
        self.forward_calls += 1
        return model.lm_head.forward(model.ln_f.forward(x))[:, 0]

    @staticmethod
    def _qkv(attn, x):
        """x: (B, 1, C) after ln_1 -> q, k, v, each (B, H, D)."""
        b, _, c = x.shape
        h = attn.n_head
        q, k, v = attn.c_attn.forward(x).reshape(b, 3, h, c // h).transpose(1, 0, 2, 3)
        return q, k, v
