"""The three character classes of GPT-2's pattern, pinned to Unicode 16.0.0.

GPT-2's pattern names \\p{L} (letters), \\p{N} (numbers) and \\s (whitespace). Which code
points they hold is the regex engine's Unicode version: each version assigns new letters,
and a code point not yet assigned is in none of the three. U+209F, for one, is unassigned in
Unicode 16.0 and 17.0 and a letter in 18.0, so "\\u209f'll" splits into "\\u209f'" + "ll" under
16.0 and "\\u209f" + "'ll" under 18.0, and the ids differ.

bpe pins Unicode 16.0.0 because the tokenizers whose ids it must reproduce use it: tiktoken
0.14 (fancy-regex 0.19 over the Rust regex-syntax crate 0.8.11, which has carried Unicode
16.0 since 0.8.5) and Hugging Face tokenizers 0.23 (Oniguruma). tests/test_bpe_tiktoken.py
checks the table against both on every code point they can be given (all but the surrogates,
which no UTF-8 text holds). The installed `regex` package plays no part, so bpe's ids do not
change when it is upgraded.

The table lives in unicode_classes.txt beside this file, as hex ranges per class, read once on
first use; `python -m bpe.write_unicode_classes` writes it from the Unicode 16.0.0 database.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

UNICODE_VERSION = "16.0.0"
TABLE_PATH = Path(__file__).with_name("unicode_classes.txt")
N_CODE_POINTS = 0x110000

# Code-point classes of the scanner: the three character sets the pattern names, and the rest.
OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3
CLASS_NAMES = {LETTER: "letter", NUMBER: "number", SPACE: "space"}


@functools.cache
def class_ranges() -> dict[int, list[tuple[int, int]]]:
    """LETTER, NUMBER, SPACE -> their code points as inclusive (first, last) ranges, in order,
    as unicode_classes.txt holds them."""
    ranges: dict[int, list[tuple[int, int]]] = {cls: [] for cls in CLASS_NAMES}
    by_name = {name: cls for cls, name in CLASS_NAMES.items()}
    for line in TABLE_PATH.read_text(encoding="ascii").splitlines():
        if not line or line.startswith("#"):
            continue
        name, *items = line.split()
        for item in items:
            first, _, last = item.partition("-")
            ranges[by_name[name]].append((int(first, 16), int(last or first, 16)))
    return ranges


@functools.cache
def codepoint_classes() -> np.ndarray:
    """(0x110000,) uint8: the class (OTHER, LETTER, NUMBER, SPACE) of every code point, in
    Unicode 16.0.0; the scanner indexes it by code point."""
    classes = np.full(N_CODE_POINTS, OTHER, dtype=np.uint8)
    for cls, ranges in class_ranges().items():
        for first, last in ranges:
            classes[first:last + 1] = cls
    return classes
