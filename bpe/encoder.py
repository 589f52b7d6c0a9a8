"""The tokenizer: text -> GPT-2 pieces -> merges applied by rank -> token ids, and back.

How a piece becomes ids, as GPT-2's encoder.py does it: start from its bytes (one token each),
then repeatedly take the adjacent pair of lowest merge rank and merge every occurrence of it,
left to right, until no adjacent pair has a merge. `merge_word_reference` is that loop in
plain Python; `merge_word` is the Numba kernel used on every piece, and `merge_long_word` the
one for pieces longer than LONG_WORD bytes, which keeps candidate pairs in a heap so a
megabyte of digits costs n log n rather than n squared. Tests check all three agree.

Most pieces are one token: the kernel first looks the piece's bytes up in a table of the
tokens whose own bytes encode to themselves, which skips the merge loop for them. (A token
can fail to: BPE may reach its bytes by another route. Those stay out of the table.)
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import operator
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import regex
from numba import njit

from .files import VocabError, read_vocab, text_to_token, write_vocab
from .pretokenize import codepoint_classes, piece_end, split_reference, utf8
from .tables import (WORD_BYTES, copy_range, empty_word_table, pair_get, pair_table, word_get,
                     word_put)

# vocabulary_digest of GPT-2's vocabulary, by which `gpt2` knows its files
GPT2_DIGEST = "9944afef19803dce5ab867b2bd5da3da8e224520021f4bffa6eda77d4df29565"
LONG_WORD = 256  # pieces longer than this many bytes take the heap kernel
CACHE_WORDS = 8192  # most multi-token pieces one kernel call remembers
NO_MERGE = np.int64(1) << np.int64(62)  # rank of a pair with no merge: above every rank
STALE = np.int64(-1)  # a rank to look up again: a neighbour of the pair was just merged


class EncoderTables(NamedTuple):
    """What the Numba kernels read; built once by Tokenizer, never written after.

    byte_ids:     (256,) int64, the token id of each single byte.
    pool:         uint8, the bytes of every token laid end to end.
    offsets:      (n_vocab + 1,) int64, token i is pool[offsets[i]:offsets[i + 1]].
    words:        word table (see tables.py): bytes -> id of each token of at most WORD_BYTES
                  bytes that encodes to itself.
    pairs:        pair table (see tables.py): (left id, right id) -> merge rank.
    merge_result: (n_merges,) int64, the token id that each merge makes.
    """
    byte_ids: np.ndarray
    pool: np.ndarray
    offsets: np.ndarray
    words: np.ndarray
    pairs: np.ndarray
    merge_result: np.ndarray


def merge_word_reference(word: list[int], ranks: Mapping[tuple[int, int], int],
                         merge_result: Sequence[int]) -> list[int]:
    """Token ids of one piece after BPE, in plain Python (the reference for the kernels).

    word: the piece's byte token ids. ranks: (left id, right id) -> merge rank.
    merge_result: merge rank -> the id it makes.
    """
    while len(word) > 1:
        pairs = [pair for pair in zip(word, word[1:]) if pair in ranks]
        if not pairs:
            break
        best = min(pairs, key=ranks.__getitem__)
        merged, i = [], 0
        while i < len(word):
            if tuple(word[i:i + 2]) == best:
                merged.append(merge_result[ranks[best]])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


@njit(nogil=True, cache=True)
def rank_of(t, left, right):
    """The merge rank of the pair (left, right), or NO_MERGE."""
    rank = pair_get(t.pairs, np.int64(left), np.int64(right))
    return NO_MERGE if rank < 0 else rank


@njit(nogil=True, cache=True)
def merge_word(word, ranks, t):
    """BPE on one piece in place; returns the number of ids left in word[:n].

    word: (n,) int32 byte token ids. ranks: int64 scratch of at least n entries; ranks[i]
    holds the rank of the pair (word[i], word[i + 1]), so each round looks up only the pairs
    next to a merge.
    """
    n = len(word)
    for i in range(n - 1):
        ranks[i] = rank_of(t, word[i], word[i + 1])
    while n > 1:
        best = NO_MERGE
        for i in range(n - 1):
            best = min(best, ranks[i])
        if best == NO_MERGE:
            break
        merged = t.merge_result[best]
        j = 0
        i = 0
        while i < n:
            if i < n - 1 and ranks[i] == best:  # ranks are unique, so this pair is `best`
                word[j] = merged
                ranks[j] = STALE
                if j > 0:
                    ranks[j - 1] = STALE
                i += 2
            else:
                word[j] = word[i]
                ranks[j] = ranks[i]
                i += 1
            j += 1
        n = j
        for i in range(n - 1):
            if ranks[i] == STALE:
                ranks[i] = rank_of(t, word[i], word[i + 1])
    return n


@njit(nogil=True, cache=True)
def heap_push(heap, size, key):
    """Push `key` onto the int64 min-heap heap[:size]; returns the new size."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = key
    return size + 1


@njit(nogil=True, cache=True)
def heap_pop(heap, size):
    """Pop the smallest key of the min-heap heap[:size]; returns (key, new size)."""
    top = heap[0]
    size -= 1
    last = heap[size]
    i = 0
    while 2 * i + 1 < size:
        child = 2 * i + 1
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= last:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last
    return top, size


@njit(nogil=True, cache=True)
def merge_long_word(word, t):
    """`merge_word` for long pieces, in O(n log n); returns the number of ids left.

    The piece is a linked list (nxt, prv) and each candidate pair a heap key
    rank << 32 | position, so the heap yields the lowest rank, leftmost first. Pairs made
    by a round's merges wait in `pending` until the round ends, as in GPT-2, where a round
    merges every occurrence of one pair before looking at any new pair.
    """
    n = len(word)
    nxt = np.arange(1, n + 1)
    prv = np.arange(-1, n - 1)
    alive = np.ones(n, dtype=np.bool_)
    heap = np.empty(3 * n, dtype=np.int64)  # n - 1 first pairs, then at most 2 per merge
    pending = np.empty(2 * n, dtype=np.int64)
    size = np.int64(0)  # np.int64, not 0: Numba would compile again for the literal
    n_pending = 0
    for i in range(n - 1):
        rank = rank_of(t, word[i], word[i + 1])
        if rank != NO_MERGE:
            size = heap_push(heap, size, (rank << 32) | i)
    round_rank = np.int64(-1)
    while size > 0 or n_pending > 0:
        if n_pending > 0 and (size == 0 or heap[0] >> 32 != round_rank):
            for k in range(n_pending):
                size = heap_push(heap, size, pending[k])
            n_pending = 0
            continue
        key, size = heap_pop(heap, size)
        round_rank = key >> 32
        p = key & 0xFFFFFFFF
        q = nxt[p]
        # Skip keys gone stale: a merge since then consumed or changed this pair.
        if not alive[p] or q >= n or rank_of(t, word[p], word[q]) != round_rank:
            continue
        word[p] = t.merge_result[round_rank]
        alive[q] = False
        nxt[p] = nxt[q]
        if nxt[q] < n:
            prv[nxt[q]] = p
        if prv[p] >= 0:
            rank = rank_of(t, word[prv[p]], word[p])
            if rank != NO_MERGE:
                pending[n_pending] = (rank << 32) | prv[p]
                n_pending += 1
        if nxt[p] < n:
            rank = rank_of(t, word[p], word[nxt[p]])
            if rank != NO_MERGE:
                pending[n_pending] = (rank << 32) | p
                n_pending += 1
    j = 0
    p = 0
    while p < n:
        word[j] = word[p]
        j += 1
        p = nxt[p]
    return j


@njit(nogil=True, cache=True)
def merge_piece(data, start, end, out, n_out, scratch, t):
    """Write the ids of the piece data[start:end] to out[n_out:]; returns the new n_out.

    scratch: int64 buffer for `merge_word`; longer pieces go to `merge_long_word`.
    """
    word = out[n_out:n_out + end - start]
    for i in range(end - start):
        word[i] = t.byte_ids[data[start + i]]
    if len(word) <= len(scratch):
        return n_out + merge_word(word, scratch, t)
    return n_out + merge_long_word(word, t)


@njit(nogil=True, cache=True)
def encode_texts(data, text_ends, classes, t):
    """Encode many texts at once (no special tokens); returns (ids, id_ends).

    data: uint8, the texts' UTF-8 bytes end to end; text_ends: (n_texts,) int64 where each
    ends. ids: int32 token ids of all texts; text k's ids are ids[id_ends[k-1]:id_ends[k]].

    Pieces of several tokens are remembered in `cache` (bytes -> offset << 8 | count into
    `cached`), since words repeat: text is Zipfian. The cache is the call's own, so threads
    share nothing writable.
    """
    out = np.empty(len(data), dtype=np.int32)  # never more ids than bytes
    id_ends = np.empty(len(text_ends), dtype=np.int64)
    scratch = np.empty(LONG_WORD, dtype=np.int64)
    cache_words = min(CACHE_WORDS, len(data) // 64 + 16)
    cache = empty_word_table(cache_words)
    cached = np.empty(cache_words * WORD_BYTES, dtype=np.int32)
    n_cache_words = 0
    n_cached = 0
    n_out = np.int64(0)  # np.int64, not 0: Numba would compile again for the literal
    pos = np.int64(0)
    for k in range(len(text_ends)):
        text = data[:text_ends[k]]  # the scanner must see where this text ends
        while pos < len(text):
            end = piece_end(text, pos, classes)
            token = word_get(t.words, text, pos, end)
            if token >= 0:
                out[n_out] = token
                n_out += 1
            else:
                hit = word_get(cache, text, pos, end)
                if hit >= 0:
                    count = hit & 0xFF
                    copy_range(cached, hit >> 8, out, n_out, count)
                    n_out += count
                else:
                    start_out = n_out
                    n_out = merge_piece(text, pos, end, out, n_out, scratch, t)
                    if end - pos <= WORD_BYTES and n_cache_words < cache_words:
                        count = n_out - start_out
                        copy_range(out, start_out, cached, n_cached, count)
                        word_put(cache, text, pos, end, (n_cached << 8) | count)
                        n_cached += count
                        n_cache_words += 1
            pos = end
        id_ends[k] = n_out
    return out[:n_out], id_ends


@njit(nogil=True, cache=True)
def encode_texts_to_uint32(data, text_ends, classes, t):
    """`encode_texts` with the ids in a uint32 array of their own length (tiktoken's type
    for id arrays), so the caller keeps no buffer sized for the bytes."""
    ids, id_ends = encode_texts(data, text_ends, classes, t)
    out = np.empty(len(ids), dtype=np.uint32)
    copy_range(ids, 0, out, 0, len(ids))
    return out, id_ends


@njit(cache=True)
def word_table(pool, offsets, tokens):
    """A word table mapping the bytes of each id in `tokens` to the id."""
    table = empty_word_table(len(tokens))
    for token in tokens:
        word_put(table, pool, offsets[token], offsets[token + 1], token)
    return table


@njit(cache=True)
def tokens_encoding_to_themselves(candidates, t):
    """(len(candidates),) bool: whether BPE on each candidate token's bytes gives that token."""
    longest = 0
    for token in candidates:
        longest = max(longest, t.offsets[token + 1] - t.offsets[token])
    out = np.empty(longest, dtype=np.int32)
    scratch = np.empty(LONG_WORD, dtype=np.int64)
    result = np.zeros(len(candidates), dtype=np.bool_)
    for k in range(len(candidates)):
        token = candidates[k]
        n = merge_piece(t.pool, t.offsets[token], t.offsets[token + 1], out, np.int64(0),
                        scratch, t)
        result[k] = n == 1 and out[0] == token
    return result


@njit(nogil=True, cache=True)
def decode_ids(ids, id_ends, pool, offsets):
    """Decode many sequences of token ids at once; returns (data, byte_ends).

    ids: int64, all in range, the sequences end to end; sequence k's end at id_ends[k].
    data: uint8, their bytes end to end; sequence k's bytes end at byte_ends[k].
    """
    byte_ends = np.empty(len(id_ends), dtype=np.int64)
    total = 0
    start = 0
    for k in range(len(id_ends)):
        for i in range(start, id_ends[k]):
            total += offsets[ids[i] + 1] - offsets[ids[i]]
        byte_ends[k] = total
        start = id_ends[k]
    out = np.empty(total, dtype=np.uint8)
    n = 0
    for token in ids:
        for i in range(offsets[token], offsets[token + 1]):
            out[n] = pool[i]
            n += 1
    return out, byte_ends


class UnknownTokenError(KeyError, ValueError):
    """An id or a byte string that is no token of the vocabulary: a KeyError, as tiktoken
    raises for it, and a ValueError, like every other bad argument to the tokenizer."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError's own would quote the message


class Tokenizer:
    """A byte-level BPE tokenizer with GPT-2's pre-tokenizer and tiktoken's API.

    Encoding: encode, encode_ordinary, encode_batch, encode_ordinary_batch, encode_to_numpy,
    encode_single_token, and encode_ordinary_batch_to_numpy (no tiktoken twin: every text's
    ids in one uint32 array). Decoding: decode, decode_bytes, decode_batch,
    decode_bytes_batch, decode_single_token_bytes, decode_tokens_bytes. The vocabulary:
    n_vocab, max_token_value, eot_token, special_tokens_set. Each behaves as tiktoken's does
    and raises what it raises (tests/test_bpe_tiktoken.py compares them), except that a bad
    argument tiktoken lets through (an unknown name in allowed_special, a negative id) is
    refused here with a ValueError, eot_token is None rather than a KeyError in a vocabulary
    without <|endoftext|>, and num_threads defaults to every core rather than 8.

    tokens: the bytes of every id 0..n_vocab-1 (a special token's bytes are its UTF-8 text).
        Every single byte must be among them.
    merges: (left id, right id) in rank order; each makes the token whose bytes are the two
        joined, which must be in `tokens`.
    special_tokens: text -> id of tokens that text becomes only when allowed (see `encode`).
    """

    def __init__(self, tokens: Sequence[bytes], merges: Sequence[tuple[int, int]],
                 special_tokens: Mapping[str, int] | None = None):
        self.tokens = [bytes(t) for t in tokens]
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.special_tokens = dict(special_tokens or {})
        n_vocab = len(self.tokens)
        for text, token in self.special_tokens.items():
            if not 0 <= token < n_vocab or self.tokens[token] != text.encode("utf-8"):
                raise ValueError(f"special token {text!r} has id {token}, whose bytes are "
                                 f"not its text; give each special token its own id")
        special_ids = set(self.special_tokens.values())
        ids_of_bytes: dict[bytes, int] = {}
        for token, token_bytes in enumerate(self.tokens):
            if token not in special_ids and ids_of_bytes.setdefault(token_bytes, token) != token:
                raise ValueError(f"tokens {ids_of_bytes[token_bytes]} and {token} are both "
                                 f"{token_bytes!r}; each byte string may be one token only")
        missing = [b for b in range(256) if bytes([b]) not in ids_of_bytes]
        if missing:
            raise ValueError(f"no token for byte {missing[0]:#04x}; a byte-level vocabulary "
                             f"needs a token for each of the 256 bytes")
        merge_result = []
        for rank, (left, right) in enumerate(self.merges):
            if not (0 <= left < n_vocab and 0 <= right < n_vocab):
                raise ValueError(f"merge {rank} ({left}, {right}) names an id outside "
                                 f"0..{n_vocab - 1}")
            merged = ids_of_bytes.get(self.tokens[left] + self.tokens[right])
            if merged is None:
                raise ValueError(f"merge {rank} makes "
                                 f"{self.tokens[left] + self.tokens[right]!r}, which is not "
                                 f"a token; add it to the vocabulary")
            merge_result.append(merged)
        self._tables = self._build_tables(ids_of_bytes, merge_result)
        # bytes -> id of every token; an ordinary token wins over a special one of the same
        # bytes, as in tiktoken
        self._token_ids = {**{text.encode("utf-8"): token
                              for text, token in self.special_tokens.items()}, **ids_of_bytes}

    def _build_tables(self, ids_of_bytes: dict[bytes, int],
                      merge_result: list[int]) -> EncoderTables:
        lengths = np.fromiter(map(len, self.tokens), dtype=np.int64, count=len(self.tokens))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        pool = np.frombuffer(b"".join(self.tokens), dtype=np.uint8)
        merges = np.array(self.merges, dtype=np.int64).reshape(-1, 2)
        tables = EncoderTables(
            byte_ids=np.array([ids_of_bytes[bytes([b])] for b in range(256)], dtype=np.int64),
            pool=pool, offsets=offsets, words=empty_word_table(0),
            pairs=pair_table(merges[:, 0], merges[:, 1]),
            merge_result=np.array(merge_result, dtype=np.int64))
        short = [t for t in ids_of_bytes.values() if len(self.tokens[t]) <= WORD_BYTES]
        short = np.array(sorted(short), dtype=np.int64)
        whole = short[tokens_encoding_to_themselves(short, tables)]
        return tables._replace(words=word_table(pool, offsets, whole))

    @classmethod
    def from_files(cls, folder: str | Path) -> Tokenizer:
        """The tokenizer saved in `folder` as encoder.json + vocab.bpe (GPT-2's format; Hugging
        Face's vocab.json + merges.txt also work). GPT-2's folder gives GPT-2's tokenizer."""
        encoder, merge_texts = read_vocab(folder)
        n_vocab = len(encoder)
        if sorted(encoder.values()) != list(range(n_vocab)):
            raise VocabError(f"the ids in {folder}'s encoder are not 0..{n_vocab - 1}, each "
                             f"once; the file is corrupt or not a GPT-2 vocabulary")
        tokens = [b""] * n_vocab
        for text, token in encoder.items():
            tokens[token] = text_to_token(text)
        merges, made = [], set()
        for rank, (left, right) in enumerate(merge_texts):
            for part in (left, right, left + right):
                if part not in encoder:
                    raise VocabError(f"merge {rank} of {folder} ({left} {right}) needs token "
                                     f"{part!r}, which the encoder lacks; the files do not "
                                     f"belong together")
            merges.append((encoder[left], encoder[right]))
            made.add(encoder[left + right])
        single_bytes = {token for token, b in enumerate(tokens) if len(b) == 1}
        special_tokens = {}
        for token, token_bytes in enumerate(tokens):
            if token not in made and token not in single_bytes:
                try:
                    special_tokens[token_bytes.decode("utf-8")] = token
                except UnicodeDecodeError:
                    raise VocabError(f"token {token} of {folder} is neither a byte, a merge "
                                     f"nor UTF-8 text; the files are corrupt") from None
        try:
            return cls(tokens, merges, special_tokens)
        except ValueError as err:
            raise VocabError(f"{folder}: {err}") from None

    def save(self, folder: str | Path) -> None:
        """Write encoder.json + vocab.bpe into `folder` (made if missing)."""
        write_vocab(folder, self.tokens, self.merges)

    @property
    def n_vocab(self) -> int:
        """Number of token ids, special tokens included."""
        return len(self.tokens)

    @property
    def max_token_value(self) -> int:
        """The largest token id: ids run 0..max_token_value."""
        return len(self.tokens) - 1

    @property
    def eot_token(self) -> int | None:
        """The id of `<|endoftext|>`, or None if the vocabulary has no such special token."""
        return self.special_tokens.get("<|endoftext|>")

    @property
    def special_tokens_set(self) -> set[str]:
        """The texts of the special tokens (a new set each time)."""
        return set(self.special_tokens)

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, in which special-token text is ordinary text."""
        return self._encode_group([text], frozenset(), frozenset())[0].tolist()

    def encode(self, text: str, *, allowed_special: Collection[str] | str = frozenset(),
               disallowed_special: Collection[str] | str = "all") -> list[int]:
        """Token ids of `text`, handling special-token text as tiktoken does.

        allowed_special: special tokens (or "all") whose text becomes their id.
        disallowed_special: special tokens (or "all": every one not allowed) whose text makes
            encode raise ValueError, so text from users cannot smuggle in `<|endoftext|>`.
            Pass () to encode their text as ordinary text instead.
        By default every special token is disallowed, so the text `<|endoftext|>` raises;
        `encode(text, allowed_special="all")` gives [50256] for it with GPT-2's vocabulary.
        """
        return self._encode_group([text], *self._special_sets(allowed_special,
                                                              disallowed_special))[0].tolist()

    def encode_to_numpy(self, text: str, *,
                        allowed_special: Collection[str] | str = frozenset(),
                        disallowed_special: Collection[str] | str = "all") -> np.ndarray:
        """`encode` as a uint32 array, made by the kernel: no Python list of the ids."""
        sets = self._special_sets(allowed_special, disallowed_special)
        return self._encode_group([text], *sets, kernel=encode_texts_to_uint32)[0]

    def encode_batch(self, texts: Iterable[str], *, num_threads: int | None = None,
                     allowed_special: Collection[str] | str = frozenset(),
                     disallowed_special: Collection[str] | str = "all") -> list[list[int]]:
        """`encode` of each text, on `num_threads` threads (default: every core).

        The Numba kernel releases the GIL, so the threads encode at once.
        """
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)

        def encode_group(group: list[str]) -> list[list[int]]:
            return ids_per_text(*self._encode_group(group, allowed, disallowed))
        return [ids for group in map_groups(encode_group, list(texts), num_threads)
                for ids in group]

    def encode_ordinary_batch(self, texts: Iterable[str], *,
                              num_threads: int | None = None) -> list[list[int]]:
        """`encode_ordinary` of each text, on `num_threads` threads (default: every core)."""
        return self.encode_batch(texts, num_threads=num_threads, disallowed_special=())

    def encode_ordinary_batch_to_numpy(self, texts: Iterable[str], *,
                                       num_threads: int | None = None
                                       ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, offsets): `encode_ordinary` of every text in one array, for corpora.

        ids: uint32, the texts' ids end to end; text k's are ids[offsets[k]:offsets[k + 1]].
        offsets: (len(texts) + 1,) int64, starting at 0.
        Each thread's kernel call makes its texts' array without the GIL, so no Python int
        is made per id; the threads' arrays are then joined.
        """
        def encode_group(group: list[str]) -> tuple[np.ndarray, np.ndarray]:
            return self._encode_group(group, frozenset(), frozenset(),
                                      kernel=encode_texts_to_uint32)
        groups = map_groups(encode_group, list(texts), num_threads)
        ids = np.concatenate([np.empty(0, dtype=np.uint32), *(ids for ids, _ in groups)])
        # Each group's offsets start at 0: shift them by the ids of the groups before it.
        shifts = np.cumsum([0] + [len(group_ids) for group_ids, _ in groups[:-1]])
        offsets = np.concatenate([np.zeros(1, dtype=np.int64),
                                  *(group_offsets[1:] + shift
                                    for (_, group_offsets), shift in zip(groups, shifts))])
        return ids, offsets

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of the one token (special ones included) whose bytes are `text_or_bytes`;
        raises KeyError (UnknownTokenError) if no token has them."""
        if isinstance(text_or_bytes, str):
            token_bytes = text_or_bytes.encode("utf-8")
        elif isinstance(text_or_bytes, bytes):
            token_bytes = text_or_bytes
        else:
            raise TypeError(f"encode_single_token takes str or bytes, not "
                            f"{type(text_or_bytes).__name__}")
        token = self._token_ids.get(token_bytes)
        if token is None:
            raise UnknownTokenError(f"{text_or_bytes!r} is not one token of this vocabulary; "
                                    f"encode() gives the ids of any text")
        return token

    def encode_ordinary_reference(self, text: str) -> list[int]:
        """`encode_ordinary` in plain Python (re + `merge_word_reference`), for tests."""
        ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        merge_result = self._tables.merge_result.tolist()
        ids = []
        for piece in split_reference(text):
            word = [self._token_ids[bytes([b])] for b in utf8(piece)]
            ids += merge_word_reference(word, ranks, merge_result)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of token ids `ids`; raises UnknownTokenError (a KeyError, as in tiktoken,
        and a ValueError) for an id outside 0..n_vocab-1."""
        return self._decode_group([self._id_array(ids)])[0]

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of token ids `ids`. Bytes that are not valid UTF-8 (such as half a
        character cut by the end of `ids`) become U+FFFD, or are handled as `errors` says
        (as in bytes.decode: "strict" raises UnicodeDecodeError)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_bytes_batch(self, batch: Iterable[Iterable[int]], *,
                           num_threads: int | None = None) -> list[bytes]:
        """`decode_bytes` of each sequence of ids in `batch`, on `num_threads` threads."""
        arrays = [self._id_array(ids) for ids in batch]
        return [data for group in map_groups(self._decode_group, arrays, num_threads)
                for data in group]

    def decode_batch(self, batch: Iterable[Iterable[int]], *, errors: str = "replace",
                     num_threads: int | None = None) -> list[str]:
        """`decode` of each sequence of ids in `batch`, on `num_threads` threads."""
        return [data.decode("utf-8", errors=errors)
                for data in self.decode_bytes_batch(batch, num_threads=num_threads)]

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of token id `token` (special ones included); raises KeyError
        (UnknownTokenError) for an id outside 0..n_vocab-1."""
        token = operator.index(token)  # a TypeError for a float, as in tiktoken
        if not 0 <= token < self.n_vocab:
            raise self._out_of_range(token)
        return self.tokens[token]

    def decode_tokens_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes of each token id in `ids`, one bytes object per id."""
        return [self.decode_single_token_bytes(token) for token in ids]

    def _id_array(self, ids: Iterable[int]) -> np.ndarray:
        """`ids` as an int64 array, checked to be ids of this vocabulary."""
        ids = np.asarray(ids if isinstance(ids, (np.ndarray, list)) else list(ids)).ravel()
        if ids.size == 0:
            return np.empty(0, dtype=np.int64)
        if ids.dtype.kind in "iu":
            outside = ids[(ids < 0) | (ids >= self.n_vocab)].tolist()
        else:  # floats, or ints too large for int64
            outside = [i for i in ids.tolist() if not (type(i) is int and 0 <= i < self.n_vocab)]
        if outside:
            raise self._out_of_range(outside[0])
        return ids.astype(np.int64, copy=False)

    def _out_of_range(self, token) -> UnknownTokenError:
        return UnknownTokenError(f"token id {token!r} is out of range: this vocabulary's ids "
                                 f"are the integers 0..{self.n_vocab - 1}")

    def _decode_group(self, arrays: list[np.ndarray]) -> list[bytes]:
        """The bytes of each int64 array of valid ids in `arrays`, by one kernel call."""
        ids = np.concatenate([np.empty(0, dtype=np.int64), *arrays])
        id_ends = np.cumsum([len(a) for a in arrays], dtype=np.int64)
        data, byte_ends = decode_ids(ids, id_ends, self._tables.pool, self._tables.offsets)
        data = data.tobytes()
        bounds = [0, *byte_ends.tolist()]
        return [data[start:end] for start, end in zip(bounds, bounds[1:])]

    def _special_sets(self, allowed: Collection[str] | str,
                      disallowed: Collection[str] | str) -> tuple[frozenset, frozenset]:
        """(allowed, disallowed) special-token texts, with "all" spelled out."""
        every = frozenset(self.special_tokens)
        allowed = every if allowed == "all" else frozenset(allowed)
        disallowed = every - allowed if disallowed == "all" else frozenset(disallowed)
        unknown = (allowed | disallowed) - every
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]!r} is not a special token of this "
                             f"vocabulary; its special tokens are {sorted(every)}")
        return allowed, disallowed

    def _encode_group(self, texts: list[str], allowed: frozenset, disallowed: frozenset,
                      kernel=encode_texts) -> tuple[np.ndarray, np.ndarray]:
        """(ids, offsets) of `texts` by one kernel call: their ordinary stretches go in
        together. Text k's ids are ids[offsets[k]:offsets[k + 1]]; offsets (len(texts) + 1,)
        int64. kernel: encode_texts (int32 ids, turned into lists), or encode_texts_to_uint32
        (uint32 ids, returned as arrays)."""
        if disallowed:
            found = find_special(texts, disallowed)
            if found:
                raise ValueError(f"text contains the special token {found!r}; pass "
                                 f"allowed_special={{{found!r}}} to encode it as one token, "
                                 f"or disallowed_special=() for ordinary text")
        if not (allowed and find_special(texts, allowed)):
            ids, id_ends = self._encode_stretches([utf8(text) for text in texts], kernel)
            return ids, np.concatenate([np.zeros(1, dtype=np.int64), id_ends])
        # split() alternates stretch, special, stretch, ...; the stretches may be empty.
        plans = [special_pattern(allowed).split(text) for text in texts]
        ids, stretch_ends = self._encode_stretches([utf8(part) for plan in plans
                                                    for part in plan[::2]], kernel)
        specials = [self.special_tokens[part] for plan in plans for part in plan[1::2]]
        # Every stretch but a text's last is followed by a special token.
        last_stretches = np.cumsum([len(plan) // 2 + 1 for plan in plans]) - 1
        followed = np.ones(len(stretch_ends), dtype=np.bool_)
        followed[last_stretches] = False
        ids = np.insert(ids, stretch_ends[followed], specials)
        specials_so_far = np.cumsum([len(plan) // 2 for plan in plans])
        return ids, np.concatenate([np.zeros(1, dtype=np.int64),
                                    stretch_ends[last_stretches] + specials_so_far])

    def _encode_stretches(self, stretches: list[bytes],
                          kernel) -> tuple[np.ndarray, np.ndarray]:
        """(ids, id_ends) of the stretches of UTF-8 text (no special tokens), by one call
        of `kernel`; stretch k's ids end at id_ends[k]."""
        data = np.frombuffer(b"".join(stretches), dtype=np.uint8)
        ends = np.fromiter(itertools.accumulate(map(len, stretches)), dtype=np.int64,
                           count=len(stretches))
        return kernel(data, ends, codepoint_classes(), self._tables)


def ids_per_text(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    """Each text's ids as a list: one tolist, then slices, far cheaper than a tolist per text."""
    ids = ids.tolist()
    bounds = offsets.tolist()
    return [ids[start:end] for start, end in zip(bounds, bounds[1:])]


def map_groups(function, items: list, num_threads: int | None) -> list:
    """`function` of each group of consecutive `items`, on `num_threads` threads (default:
    every core), in order. There are several groups per thread, for balance, and each is
    one kernel call, which releases the GIL."""
    num_threads = num_threads or os.cpu_count() or 1
    if num_threads == 1:  # one kernel call in this thread
        return [function(items)]
    with ThreadPoolExecutor(num_threads) as pool:
        return list(pool.map(function, split_evenly(items, 4 * num_threads)))


def find_special(texts: list[str], specials: frozenset[str]) -> str | None:
    """The first of `specials` found in `texts`, or None."""
    pattern = special_pattern(specials)
    if any("\x00" in special for special in specials):
        found = next(filter(None, map(pattern.search, texts)), None)
    else:  # one search over all texts, joined so no special can span two of them
        found = pattern.search("\x00".join(texts))
    return found and found.group()


@functools.lru_cache(maxsize=64)
def special_pattern(specials: frozenset[str]) -> regex.Pattern:
    """A pattern capturing any of `specials`, longest first so none hides a longer one."""
    return regex.compile("(" + "|".join(map(regex.escape, sorted(specials, key=len,
                                                                  reverse=True))) + ")")


def split_evenly(items: list, n_groups: int) -> list[list]:
    """`items` in at most `n_groups` consecutive groups of nearly equal length."""
    size = -(-len(items) // max(n_groups, 1)) or 1
    return [items[i:i + size] for i in range(0, len(items), size)]


def load(folder: str | Path) -> Tokenizer:
    """The tokenizer in `folder` (encoder.json + vocab.bpe), e.g. GPT-2's."""
    return Tokenizer.from_files(folder)


def gpt2(folder: str | Path) -> Tokenizer:
    """GPT-2's tokenizer, from a folder holding GPT-2's encoder.json + vocab.bpe (or the same
    vocabulary as Hugging Face's vocab.json + merges.txt): what tiktoken's
    get_encoding("gpt2") gives, with no download. Raises VocabError if the folder holds
    another vocabulary (`load` reads any)."""
    tokenizer = Tokenizer.from_files(folder)
    if vocabulary_digest(tokenizer) != GPT2_DIGEST:
        raise VocabError(f"{folder} holds a vocabulary of {tokenizer.n_vocab} tokens that is "
                         f"not GPT-2's; read it with bpe.load, or point to GPT-2's own files")
    return tokenizer


def vocabulary_digest(tokenizer: Tokenizer) -> str:
    """SHA-256 (hex) of a vocabulary's tokens, merges and special tokens: two tokenizers
    with the same digest give every text the same ids."""
    digest = hashlib.sha256(np.array([len(t) for t in tokenizer.tokens], dtype="<i8").tobytes())
    digest.update(b"".join(tokenizer.tokens))
    digest.update(np.array(tokenizer.merges, dtype="<i8").tobytes())
    digest.update(repr(sorted(tokenizer.special_tokens.items())).encode("utf-8"))
    return digest.hexdigest()
