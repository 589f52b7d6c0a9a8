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
import itertools
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
def decode_ids(ids, pool, offsets):
    """uint8 bytes of token ids `ids` (int64, all in range) laid end to end."""
    total = 0
    for token in ids:
        total += offsets[token + 1] - offsets[token]
    out = np.empty(total, dtype=np.uint8)
    n = 0
    for token in ids:
        for i in range(offsets[token], offsets[token + 1]):
            out[n] = pool[i]
            n += 1
    return out


class Tokenizer:
    """A byte-level BPE tokenizer with GPT-2's pre-tokenizer; API close to tiktoken's.

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
        self._ordinary_ids = list(ids_of_bytes.values())

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
    def eot_token(self) -> int | None:
        """The id of `<|endoftext|>`, or None if the vocabulary has no such special token."""
        return self.special_tokens.get("<|endoftext|>")

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, in which special-token text is ordinary text."""
        return self._encode_group([text], frozenset(), frozenset())[0]

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
                                                              disallowed_special))[0]

    def encode_batch(self, texts: Iterable[str], *, num_threads: int | None = None,
                     allowed_special: Collection[str] | str = frozenset(),
                     disallowed_special: Collection[str] | str = "all") -> list[list[int]]:
        """`encode` of each text, on `num_threads` threads (default: every core).

        The Numba kernel releases the GIL, so the threads encode at once.
        """
        texts = list(texts)
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        num_threads = num_threads or os.cpu_count() or 1
        groups = split_evenly(texts, 4 * num_threads)  # several per thread, for balance
        with ThreadPoolExecutor(num_threads) as pool:
            results = pool.map(lambda group: self._encode_group(group, allowed, disallowed),
                               groups)
            return [ids for group in results for ids in group]

    def encode_ordinary_reference(self, text: str) -> list[int]:
        """`encode_ordinary` in plain Python (regex + `merge_word_reference`), for tests."""
        ids_of_bytes = {self.tokens[token]: token for token in self._ordinary_ids}
        ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        merge_result = self._tables.merge_result.tolist()
        ids = []
        for piece in split_reference(text):
            word = [ids_of_bytes[bytes([b])] for b in utf8(piece)]
            ids += merge_word_reference(word, ranks, merge_result)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of token ids `ids`; raises ValueError for an id outside 0..n_vocab-1."""
        ids = np.asarray(ids if isinstance(ids, (np.ndarray, list)) else list(ids)).ravel()
        if ids.size == 0:
            return b""
        if ids.dtype.kind in "iu":
            outside = ids[(ids < 0) | (ids >= self.n_vocab)].tolist()
        else:  # floats, or ints too large for int64
            outside = [i for i in ids.tolist() if not (type(i) is int and 0 <= i < self.n_vocab)]
        if outside:
            raise ValueError(f"token id {outside[0]!r} is out of range: this vocabulary's ids "
                             f"are the integers 0..{self.n_vocab - 1}")
        return decode_ids(ids.astype(np.int64), self._tables.pool,
                          self._tables.offsets).tobytes()

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids `ids`; bytes that are not valid UTF-8 (such as half a
        character cut by the end of `ids`) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

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

    def _encode_group(self, texts: list[str], allowed: frozenset,
                      disallowed: frozenset) -> list[list[int]]:
        """Encode `texts` with one kernel call: their ordinary stretches go in together."""
        if disallowed:
            found = find_special(texts, disallowed)
            if found:
                raise ValueError(f"text contains the special token {found!r}; pass "
                                 f"allowed_special={{{found!r}}} to encode it as one token, "
                                 f"or disallowed_special=() for ordinary text")
        if not (allowed and find_special(texts, allowed)):
            return self._encode_stretches([utf8(text) for text in texts])
        # split() alternates stretch, special, stretch, ...; the stretches may be empty.
        plans = [special_pattern(allowed).split(text) for text in texts]
        encoded = iter(self._encode_stretches([utf8(part) for plan in plans
                                               for part in plan[::2]]))
        return [[token for i, part in enumerate(plan)
                 for token in (next(encoded) if i % 2 == 0 else [self.special_tokens[part]])]
                for plan in plans]

    def _encode_stretches(self, stretches: list[bytes]) -> list[list[int]]:
        """The ids of each stretch of UTF-8 text (no special tokens), by one kernel call."""
        data = np.frombuffer(b"".join(stretches), dtype=np.uint8)
        ends = np.fromiter(itertools.accumulate(map(len, stretches)), dtype=np.int64,
                           count=len(stretches))
        ids, id_ends = encode_texts(data, ends, codepoint_classes(), self._tables)
        ids = ids.tolist()  # one list, then slices: far cheaper than a tolist per stretch
        bounds = [0, *id_ends.tolist()]
        return [ids[start:end] for start, end in zip(bounds, bounds[1:])]


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
