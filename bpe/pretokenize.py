"""GPT-2's pre-tokenizer: the split of text into pieces before any merge.

GPT-2 cuts text with one regular expression, `GPT2_PATTERN`, and runs BPE on each piece alone.
`split_reference` is that expression run by the `regex` package, exactly as GPT-2 does. It is
the reference; `piece_ends` is the fast path, a Numba scanner over UTF-8 bytes that finds the
same pieces by classifying each code point as letter, number, whitespace or other (with a
table that `regex` itself fills, so both agree on every code point) and walking the
alternatives of the pattern by hand.
"""
from __future__ import annotations

import functools

import numpy as np
import regex
from numba import njit

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Code-point classes of the scanner: the three character sets the pattern names, and the rest.
OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3

APOSTROPHE, BLANK = ord("'"), ord(" ")
S, T, M, D, R, V, L, E = (ord(c) for c in "stmdrvle")


def split_reference(text: str) -> list[str]:
    """GPT-2's pieces of `text`, found by the `regex` package (the reference)."""
    return regex.findall(GPT2_PATTERN, text)


@functools.cache
def codepoint_classes() -> np.ndarray:
    """(0x110000,) uint8: the class (OTHER, LETTER, NUMBER, SPACE) of every code point,
    as `regex` defines \\p{L}, \\p{N} and \\s (so the scanner shares its Unicode version)."""
    # Every code point in one string, surrogates too (which UTF-32 must be told to pass).
    every_char = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    classes = np.full(0x110000, OTHER, dtype=np.uint8)
    for cls, pattern in ((LETTER, r"\p{L}+"), (NUMBER, r"\p{N}+"), (SPACE, r"\s+")):
        for match in regex.finditer(pattern, every_char):
            classes[match.start():match.end()] = cls
    return classes


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
