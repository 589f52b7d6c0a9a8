"""Write bpe/unicode_classes.txt, the pre-tokenizer's character classes, from the Unicode
16.0.0 database: `python -m bpe.write_unicode_classes`.

The database is Python's own `unicodedata` where it is that version (Python 3.14), else the
`unicodedata2==16.0.0` package. \\p{L} is the general categories Lu Ll Lt Lm Lo, \\p{N} is
Nd Nl No, and \\s is the White_Space property, which in Unicode 16.0 is the separators
(Zs Zl Zp) and U+0009..U+000D and U+0085. Why 16.0: see unicode_classes.py.
"""
from __future__ import annotations

import sys
import textwrap
import unicodedata

import numpy as np

from .unicode_classes import (CLASS_NAMES, LETTER, N_CODE_POINTS, NUMBER, OTHER, SPACE,
                              TABLE_PATH, UNICODE_VERSION)

CATEGORY_CLASSES = {"L": LETTER, "N": NUMBER, "Z": SPACE}  # by a category's first letter
SPACE_CONTROLS = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85)  # White_Space outside the separators


def classes_from_unicode_data(database) -> np.ndarray:
    """(0x110000,) uint8 classes from the general categories of `database`, a module like
    `unicodedata`."""
    classes = np.full(N_CODE_POINTS, OTHER, dtype=np.uint8)
    for cp in range(N_CODE_POINTS):
        classes[cp] = CATEGORY_CLASSES.get(database.category(chr(cp))[0], OTHER)
    classes[list(SPACE_CONTROLS)] = SPACE
    return classes


def format_table(classes: np.ndarray) -> str:
    """unicode_classes.txt's text for `classes`: per class, lines of hex ranges."""
    lines = [f"# GPT-2's pattern classes in Unicode {UNICODE_VERSION} as hex code point ranges.",
             "# Written by `python -m bpe.write_unicode_classes`; see bpe/unicode_classes.py."]
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
    try:
        import unicodedata2
    except ImportError:
        unicodedata2 = None
    for module in (unicodedata, unicodedata2):
        if module and module.unidata_version == UNICODE_VERSION:
            return module
    found = unicodedata2.unidata_version if unicodedata2 else "not installed"
    raise SystemExit(f"python -m bpe.write_unicode_classes: error: needs the Unicode "
                     f"{UNICODE_VERSION} database; Python's unicodedata is "
                     f"{unicodedata.unidata_version} and unicodedata2 is {found}: run "
                     f"'pip install unicodedata2=={UNICODE_VERSION}' or use Python 3.14")


def main() -> None:
    TABLE_PATH.write_text(format_table(classes_from_unicode_data(unicode_16_data())),
                          encoding="ascii")
    print(f"wrote {TABLE_PATH.name} (Unicode {UNICODE_VERSION})", file=sys.stderr)


if __name__ == "__main__":
    main()
