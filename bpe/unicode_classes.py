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

The table lives in unicode_classes.txt beside this file, as hex ranges per class, read once at
import. `python -m bpe.unicode_classes` writes it again from Unicode 16.0.0 data: Python's
own `unicodedata` where it is that version (Python 3.14), else the `unicodedata2==16.0.0`
package. \\p{L} is the general categories Lu Ll Lt Lm Lo, \\p{N} is Nd Nl No, and \\s is the
White_Space property, which in Unicode 16.0 is the separators (Zs Zl Zp) and U+0009..U+000D
and U+0085.
"""
from __future__ import annotations

import functools
import sys
import textwrap
from pathlib import Path

import numpy as np

UNICODE_VERSION = "16.0.0"
TABLE_PATH = Path(__file__).with_name("unicode_classes.txt")
N_CODE_POINTS = 0x110000

# Code-point classes of the scanner: the three character sets the pattern names, and the rest.
OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3
CLASS_NAMES = {LETTER: "letter", NUMBER: "number", SPACE: "space"}
CATEGORY_CLASSES = {"L": LETTER, "N": NUMBER, "Z": SPACE}  # by a category's first letter
SPACE_CONTROLS = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85)  # White_Space outside the separators


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


def classes_from_unicode_data(unicodedata) -> np.ndarray:
    """(0x110000,) uint8 classes from a `unicodedata`-like module's general categories."""
    classes = np.full(N_CODE_POINTS, OTHER, dtype=np.uint8)
    for cp in range(N_CODE_POINTS):
        classes[cp] = CATEGORY_CLASSES.get(unicodedata.category(chr(cp))[0], OTHER)
    classes[list(SPACE_CONTROLS)] = SPACE
    return classes


def format_table(classes: np.ndarray) -> str:
    """unicode_classes.txt's text for `classes`: per class, lines of hex ranges."""
    lines = [f"# GPT-2's pattern classes in Unicode {UNICODE_VERSION} as hex code point ranges.",
             "# Written by `python -m bpe.unicode_classes`; see bpe/unicode_classes.py."]
    for cls, name in CLASS_NAMES.items():
        member = np.concatenate([[False], classes == cls, [False]])
        edges = np.flatnonzero(member[1:] != member[:-1])  # each run's start, then its end
        items = [f"{first:x}" if first == end - 1 else f"{first:x}-{end - 1:x}"
                 for first, end in zip(edges[::2], edges[1::2])]
        lines += textwrap.wrap(" ".join(items), 92, initial_indent=f"{name} ",
                               subsequent_indent=f"{name} ", break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def unicode_16_data():
    """A `unicodedata` module of Unicode 16.0.0: Python's own, else unicodedata2's."""
    import unicodedata
    if unicodedata.unidata_version == UNICODE_VERSION:
        return unicodedata
    try:
        import unicodedata2
    except ImportError:
        unicodedata2 = None
    if unicodedata2 is None or unicodedata2.unidata_version != UNICODE_VERSION:
        raise SystemExit(f"python -m bpe.unicode_classes: error: needs Unicode "
                         f"{UNICODE_VERSION} data, which this Python's unicodedata "
                         f"({unicodedata.unidata_version}) is not; run "
                         f"'pip install unicodedata2=={UNICODE_VERSION}' or use Python 3.14")
    return unicodedata2


def main() -> None:
    TABLE_PATH.write_text(format_table(classes_from_unicode_data(unicode_16_data())),
                          encoding="ascii")
    print(f"wrote {TABLE_PATH.name} (Unicode {UNICODE_VERSION})", file=sys.stderr)


if __name__ == "__main__":
    main()
