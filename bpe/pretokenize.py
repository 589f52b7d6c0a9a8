"""GPT-2's pre-tokenizer: the split of text into pieces before any merge.

GPT-2 cuts text with one regular expression, `GPT2_PATTERN`, and runs BPE on each piece alone.
`split_reference` is that expression run by Python's `re`, with its classes \\p{L}, \\p{N} and
\\s written out as the code point ranges of Unicode 16.0.0 (see unicode_classes.py: the version
tiktoken and Hugging Face tokenizers use). It is the reference; `piece_ends` is the fast path,
a Numba scanner over UTF-8 bytes that finds the same pieces by looking each code point's class
(letter, number, whitespace or other) up in the same ranges, as a table indexed by code point,
and walking the alternatives of the pattern by hand.
"""
from __future__ import annotations

import functools
import re

import numpy as np
from numba import njit

from .unicode_classes import LETTER, NUMBER, SPACE, class_ranges, codepoint_classes

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT2_PATTERN with each class a set: {L} letters, {N} numbers, {S} whitespace; \S is [^{S}].
PATTERN_WITH_SETS = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+"""
                     r"""|[{S}]+(?![^{S}])|[{S}]+""")

APOSTROPHE, BLANK = ord("'"), ord(" ")
S, T, M, D, R, V, L, E = (ord(c) for c in "stmdrvle")


@functools.cache
def pinned_pattern() -> re.Pattern:
    """GPT2_PATTERN with its classes as Unicode 16.0.0's ranges, compiled by `re` (which then
    needs no Unicode tables of its own)."""
    sets = {name: "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in class_ranges()[cls])
            for name, cls in (("L", LETTER), ("N", NUMBER), ("S", SPACE))}
    return re.compile(PATTERN_WITH_SETS.format(**sets))


def split_reference(text: str) -> list[str]:
    """GPT-2's pieces of `text`, found by the pattern itself (the reference)."""
    return pinned_pattern().findall(text)


def utf8(text: str) -> bytes:
    """`text` as UTF-8; a lone surrogate (which UTF-8 cannot hold) becomes U+FFFD, as in
    tiktoken, so any Python string can be tokenized."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # The UTF-16 round trip pairs up surrogate halves and replaces the lone ones.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


@njit(nogil=True, cache=True)
def char_at(data, pos, classes):
    """(class, width in bytes) of the code point starting at data[pos] (valid UTF-8)."""
    b0 = np.int64(data[pos])
    if b0 < 0x80:
        return classes[b0], 1
    if b0 < 0xE0:
        cp = ((b0 & 0x1F) << 6) | (np.int64(data[pos + 1]) & 0x3F)
        return classes[cp], 2
    if b0 < 0xF0:
        cp = ((b0 & 0x0F) << 12) | ((np.int64(data[pos + 1]) & 0x3F) << 6) \
            | (np.int64(data[pos + 2]) & 0x3F)
        return classes[cp], 3
    cp = ((b0 & 0x07) << 18) | ((np.int64(data[pos + 1]) & 0x3F) << 12) \
        | ((np.int64(data[pos + 2]) & 0x3F) << 6) | (np.int64(data[pos + 3]) & 0x3F)
    return classes[cp], 4


@njit(nogil=True, cache=True)
def run_end(data, pos, cls, classes):
    """End of the run of code points of class `cls` that starts at data[pos]."""
    n = len(data)
    while pos < n:
        c, width = char_at(data, pos, classes)
        if c != cls:
            break
        pos += width
    return pos


@njit(nogil=True, cache=True)
def piece_end(data, pos, classes):
    """End (byte offset) of the piece of GPT2_PATTERN that starts at data[pos].

    The branches follow the pattern's alternatives in order, since `regex` takes the first
    alternative that matches.
    """
    n = len(data)
    b = data[pos]
    if b == APOSTROPHE and pos + 1 < n:  # 's|'t|'re|'ve|'m|'ll|'d
        c = data[pos + 1]
        if c == S or c == T or c == M or c == D:
            return pos + 2
        if pos + 2 < n:
            c2 = data[pos + 2]
            if (c == R and c2 == E) or (c == V and c2 == E) or (c == L and c2 == L):
                return pos + 3
    if b == BLANK and pos + 1 < n:  # ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+' with the space
        cls, _ = char_at(data, pos + 1, classes)
        if cls != SPACE:
            return run_end(data, pos + 1, cls, classes)
    cls, width = char_at(data, pos, classes)
    if cls != SPACE:  # the same three without the space
        return run_end(data, pos, cls, classes)
    # '\s+(?!\S)|\s+': a run of whitespace, less its last character when a non-space follows
    # (that character then starts the next piece, as in ' word'), unless it is the only one.
    last = pos
    end = pos + width
    while end < n:
        cls, width = char_at(data, end, classes)
        if cls != SPACE:
            break
        last = end
        end += width
    if end < n and last > pos:
        return last
    return end


@njit(nogil=True, cache=True)
def piece_ends(data, classes):
    """(n_pieces,) int64: the end offset of every GPT-2 piece of UTF-8 bytes `data` (uint8)."""
    ends = np.empty(len(data), dtype=np.int64)
    n_pieces = 0
    pos = np.int64(0)  # np.int64, not 0: Numba would compile again for the literal
    while pos < len(data):
        pos = piece_end(data, pos, classes)
        ends[n_pieces] = pos
        n_pieces += 1
    return ends[:n_pieces]


def split(text: str) -> list[str]:
    """GPT-2's pieces of `text`, found by the fast scanner; equals `split_reference(text)`
    for every string without lone surrogates."""
    data = utf8(text)
    ends = piece_ends(np.frombuffer(data, dtype=np.uint8), codepoint_classes()).tolist()
    return [data[start:end].decode("utf-8") for start, end in zip([0] + ends, ends)]
