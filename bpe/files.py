"""GPT-2's vocabulary files: `encoder.json` + `vocab.bpe`, and the byte <-> unicode table.

`encoder.json` maps every token to its id. A token is written as a string of printable
characters, one per byte, through GPT-2's byte-to-unicode table (so the space byte is 'Ġ').
`vocab.bpe` holds the merges in rank order: a line `#version: 0.2`, then one merge per line,
its two tokens written the same way and separated by one space (no written token contains a
space, since the space byte is written 'Ġ').

Hugging Face names the same two files `vocab.json` and `merges.txt`; `read_vocab` accepts
either pair of names, and `write_vocab` writes GPT-2's.

Tokens that are neither one of the 256 bytes nor the result of a merge are special tokens
(GPT-2 has one, `<|endoftext|>`). Their text is written through the table too when every
character has an entry there (true of any ASCII special), else as plain text.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import regex

GPT2_NAMES = ("encoder.json", "vocab.bpe")
HF_NAMES = ("vocab.json", "merges.txt")
VERSION_LINE = "#version: 0.2"


class VocabError(ValueError):
    """A vocabulary folder that is missing, unreadable or not a valid GPT-2-format pair."""


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte 0..255 to a printable character, in GPT-2's order.

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, soft hyphen)
    map to U+0100 upwards, so every byte string becomes a string with no whitespace. The
    dict's order is GPT-2's order of the first 256 ids in `encoder.json`.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(others)})
    return table


@functools.cache
def from_table() -> tuple[dict[int, int], regex.Pattern]:
    """(a str.translate table from each table character to its byte, read as Latin-1,
    a pattern matching any character outside the table)."""
    table = bytes_to_unicode()
    to_latin1 = {ord(c): b for b, c in table.items()}
    outside = regex.compile("[^" + "".join(map(regex.escape, table.values())) + "]")
    return to_latin1, outside


def token_to_text(token: bytes) -> str:
    """Write a token's bytes as GPT-2 does in its files (b' the' -> 'Ġthe')."""
    # Latin-1 turns each byte into the character of the same number, which translate maps.
    return token.decode("latin-1").translate(bytes_to_unicode())


def text_to_token(text: str) -> bytes:
    """Read a token written by `token_to_text`; text with characters outside the table
    (only special tokens can have them) is taken as plain UTF-8 text."""
    to_latin1, outside = from_table()
    if outside.search(text):
        return text.encode("utf-8")
    return text.translate(to_latin1).encode("latin-1")


def find_vocab_files(folder: str | Path) -> tuple[Path, Path]:
    """The (encoder, merges) paths in `folder`: GPT-2's names, else Hugging Face's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VocabError(f"vocabulary folder {folder} does not exist; "
                         f"pass a folder holding {' + '.join(GPT2_NAMES)}")
    for names in (GPT2_NAMES, HF_NAMES):
        paths = tuple(folder / name for name in names)
        if all(p.is_file() for p in paths):
            return paths
    raise VocabError(f"{folder} holds neither {' + '.join(GPT2_NAMES)} nor "
                     f"{' + '.join(HF_NAMES)}; train a vocabulary there with "
                     f"'numpygpt tokenizer train' or point to GPT-2's files")


def read_vocab(folder: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read a vocabulary folder as written: (token text -> id, merges in rank order).

    Only the files' syntax is checked here; `Tokenizer.from_files` checks their meaning.
    """
    encoder_path, merges_path = find_vocab_files(folder)
    try:
        encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VocabError(f"{encoder_path} is not valid JSON ({err}); "
                         f"it should map token strings to ids") from None
    if not isinstance(encoder, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in encoder.items()):
        raise VocabError(f"{encoder_path} must be one JSON object mapping token strings "
                         f"to integer ids")
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise VocabError(f"{merges_path} is not UTF-8 text ({err})") from None
    first = 1
    if lines and lines[0].startswith("#version"):
        lines, first = lines[1:], 2
    merges = []
    for number, line in enumerate(lines, start=first):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise VocabError(f"{merges_path} line {number} is {line!r}; each merge line "
                             f"must be two tokens separated by one space")
        merges.append((parts[0], parts[1]))
    return encoder, merges


def write_vocab(folder: str | Path, tokens: list[bytes],
                merges: list[tuple[int, int]]) -> None:
    """Write `encoder.json` + `vocab.bpe` into `folder` (created if missing).

    tokens: the bytes of every id, ids 0..len(tokens)-1 (special tokens as UTF-8 text).
    merges: (left id, right id) in rank order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = [token_to_text(t) for t in tokens]
    encoder = {text: i for i, text in enumerate(texts)}
    encoder_path, merges_path = (folder / name for name in GPT2_NAMES)
    lines = [VERSION_LINE] + [f"{texts[a]} {texts[b]}" for a, b in merges]
    write_atomically(merges_path, "\n".join(lines) + "\n")
    write_atomically(encoder_path, json.dumps(encoder))


def write_atomically(path: Path, text: str) -> None:
    """Write UTF-8 `text` to `path` so that a crash leaves the old file or the new one, never
    half of one (a checkpoint folder must not hold a vocabulary that fails to load)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
