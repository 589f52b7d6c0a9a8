"""Open-addressing hash tables held in NumPy arrays, so Numba kernels can look up without the GIL.

Two kinds, shared by the encoder and the trainer:
- pair tables: a token pair (left id, right id) -> an int64 value (a merge rank, a pair
  index). (capacity, 2) int64 rows [key, value], key = left << 32 | right, -1 when empty.
- word tables: a byte string of at most WORD_BYTES bytes -> an int64 value (a token id).
  (capacity, 4) uint64 rows [bytes 0-7, bytes 8-15, length, value]: the bytes sit in the
  row itself, zero padded, so a look-up reads one cache line and no token pool; length is
  EMPTY when the row is free.
Key and value share a row for the same reason. Capacities are powers of two, at most half
full, so linear probing ends fast.

`copy_range` copies between arrays in kernels: Numba's slice assignment compiles its shape
check and error message, seconds of compile time for one line.
"""
from __future__ import annotations

import numpy as np
from numba import njit

WORD_BYTES = 16
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads nearby keys apart
MIX = np.uint64(0xC2B2AE3D27D4EB4F)


@njit(cache=True)
def capacity_for(n_items):
    """The smallest power of two at least twice `n_items` (and at least 16)."""
    capacity = 16
    while capacity < 2 * n_items:
        capacity *= 2
    return capacity


@njit(nogil=True, cache=True)
def copy_range(src, src_start, dst, dst_start, count):
    """dst[dst_start:dst_start + count] = src[src_start:src_start + count]."""
    for i in range(count):
        dst[dst_start + i] = src[src_start + i]


@njit(nogil=True, cache=True)
def scramble(h, mask):
    """A slot index in 0..mask from a 64-bit value, using its well-mixed high bits."""
    h = h * GOLDEN
    return (h ^ (h >> np.uint64(29))) & mask


@njit(nogil=True, cache=True)
def empty_pair_table(n_items):
    """A pair table with room for `n_items` pairs."""
    return np.full((capacity_for(n_items), 2), -1, dtype=np.int64)


@njit(nogil=True, cache=True)
def pair_slot(table, left, right):
    """Index of the row holding (left, right), or of the free row where it would go."""
    key = (np.int64(left) << 32) | np.int64(right)
    mask = np.uint64(len(table) - 1)
    slot = scramble(np.uint64(key), mask)
    while table[slot, 0] != key and table[slot, 0] != -1:
        slot = (slot + np.uint64(1)) & mask
    return slot


@njit(nogil=True, cache=True)
def pair_get(table, left, right):
    """The value stored for (left, right), or -1."""
    return table[pair_slot(table, left, right), 1]


@njit(nogil=True, cache=True)
def pair_put(table, left, right, value):
    """Store `value` for (left, right); the table must have a free row left."""
    slot = pair_slot(table, left, right)
    table[slot, 0] = (np.int64(left) << 32) | np.int64(right)
    table[slot, 1] = value


@njit(cache=True)
def pair_table(lefts, rights):
    """A pair table mapping (lefts[i], rights[i]) -> i for every i."""
    table = empty_pair_table(len(lefts))
    for i in range(len(lefts)):
        pair_put(table, lefts[i], rights[i], i)
    return table


@njit(nogil=True, cache=True)
def empty_word_table(n_items):
    """A word table with room for `n_items` words."""
    table = np.zeros((capacity_for(n_items), 4), dtype=np.uint64)
    table[:, 2] = EMPTY
    return table


@njit(nogil=True, cache=True)
def pack_word(data, start, end):
    """(lo, hi) uint64: the bytes data[start:end] (at most WORD_BYTES), little-endian,
    zero padded."""
    lo = np.uint64(0)
    hi = np.uint64(0)
    for i in range(start, min(end, start + 8)):
        lo |= np.uint64(data[i]) << np.uint64(8 * (i - start))
    for i in range(start + 8, end):
        hi |= np.uint64(data[i]) << np.uint64(8 * (i - start - 8))
    return lo, hi


@njit(nogil=True, cache=True)
def word_slot(table, lo, hi, length):
    """Index of the row holding the packed word (lo, hi, length), or of the free row where
    it would go."""
    mask = np.uint64(len(table) - 1)
    slot = scramble(lo ^ (hi * MIX) ^ length, mask)
    while table[slot, 2] != EMPTY:
        if table[slot, 0] == lo and table[slot, 1] == hi and table[slot, 2] == length:
            break
        slot = (slot + np.uint64(1)) & mask
    return slot


@njit(nogil=True, cache=True)
def word_get(table, data, start, end):
    """The value stored for data[start:end], or -1 (always -1 past WORD_BYTES bytes)."""
    if end - start > WORD_BYTES:
        return np.int64(-1)
    lo, hi = pack_word(data, start, end)
    slot = word_slot(table, lo, hi, np.uint64(end - start))
    if table[slot, 2] == EMPTY:
        return np.int64(-1)
    return np.int64(table[slot, 3])


@njit(nogil=True, cache=True)
def word_put(table, data, start, end, value):
    """Store `value` (>= 0) for data[start:end], at most WORD_BYTES bytes; the table must have
    a free row left."""
    lo, hi = pack_word(data, start, end)
    length = np.uint64(end - start)
    slot = word_slot(table, lo, hi, length)
    table[slot, 0] = lo
    table[slot, 1] = hi
    table[slot, 2] = length
    table[slot, 3] = np.uint64(value)
