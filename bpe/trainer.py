"""Training a byte-level BPE vocabulary: GPT-2's pieces, counted once, merged incrementally.

1. `count_words` splits the corpus into GPT-2 pieces and counts each distinct piece once
   (word -> count), streaming files in chunks cut where the split is certain to be the same
   as for the whole file, so a corpus larger than memory can be counted.
2. `learn_merges` repeats: take the pair with the highest count, make it a token, merge it
   in every word. Counting all pairs again after each merge would be quadratic; instead the
   Numba kernel keeps pair -> count and pair -> the words it occurs in, and a merge visits only
   those words, subtracting the pairs it breaks and adding the pairs it makes. The next pair
   comes from a priority queue with lazy deletion: an entry whose count went stale is pushed
   again with the true count when it reaches the top.

Ties go to the pair whose (left bytes, right bytes) is smallest, compared as Python compares
tuples of bytes, so training is deterministic. A merge joins every occurrence of the pair in
a word, left to right without overlap, exactly as the encoder will; pair counts count every
adjacent position, so 'aaa' holds the pair ('a', 'a') twice.

Ids: 0..255 are the bytes, in GPT-2's order (so they equal GPT-2's first 256 ids), then one id
per merge, then the special tokens.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import regex
from numba import njit

from .encoder import Tokenizer, special_pattern
from .files import bytes_to_unicode
from .pretokenize import codepoint_classes, piece_ends, utf8
from .tables import copy_range, empty_pair_table, pair_get, pair_put

CHUNK_CHARS = 1 << 20  # characters read from a file at a time
MERGES_PER_CALL = 256  # merges between two progress reports
ASCII_SPACES = " \t\n\x0b\x0c\r"

Corpus = str | os.PathLike | Iterable[str | os.PathLike]


def train(corpus: Corpus, vocab_size: int,
          special_tokens: Sequence[str] = ("<|endoftext|>",), *,
          progress: Callable[[str], None] | None = None) -> Tokenizer:
    """Learn a vocabulary of `vocab_size` ids (256 bytes + merges + special tokens).

    corpus: a text (str), a UTF-8 file (a path object such as pathlib.Path), or an iterable
        of them; each is one document, and files are read in chunks.
    special_tokens: texts given their own ids after the merges; in the corpus they are cut
        out and never learned as ordinary text.
    progress: called with a line on how far training is (as often as every 256 merges);
        None: train silently.
    Returns a Tokenizer; fewer merges are learned if the corpus runs out of pairs.
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    if not all(isinstance(s, str) and s for s in special_tokens):
        raise ValueError("special tokens must be non-empty strings")
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is too small: it must hold the 256 bytes "
                         f"and {len(special_tokens)} special token(s), so at least "
                         f"{256 + len(special_tokens)}")
    start = time.perf_counter()

    def report(message: str) -> None:
        if progress is not None:
            progress(f"[bpe {time.perf_counter() - start:6.1f}s] {message}")
    words = count_words(documents(corpus), special_tokens, report)
    report(f"counted {len(words):,} distinct words; learning {n_merges:,} merges")
    merges = learn_merges(words, n_merges, report)
    byte_order = list(bytes_to_unicode())
    tokens = [bytes([b]) for b in byte_order]
    for left, right in merges:
        tokens.append(tokens[left] + tokens[right])
    special_ids = {s: len(tokens) + i for i, s in enumerate(special_tokens)}
    tokens += [utf8(s) for s in special_tokens]
    return Tokenizer(tokens, merges, special_ids)


def documents(corpus: Corpus) -> Iterator[Iterator[str]]:
    """Each document of the corpus as an iterator over consecutive chunks of its text."""
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [corpus]
    for item in corpus:
        if isinstance(item, str):
            yield iter([item])
        elif isinstance(item, os.PathLike):
            yield read_chunks(Path(item))
        else:
            raise TypeError(f"the corpus holds a {type(item).__name__}; give texts (str) "
                            f"or file paths (pathlib.Path)")


def read_chunks(path: Path) -> Iterator[str]:
    """The text of a UTF-8 file, CHUNK_CHARS characters at a time, line endings untouched."""
    with open(path, encoding="utf-8", newline="") as file:
        while True:
            try:
                chunk = file.read(CHUNK_CHARS)
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} is not UTF-8 text (byte "
                                 f"{err.object[err.start]:#04x} cannot be decoded); "
                                 f"convert it to UTF-8 first") from None
            if not chunk:
                return
            yield chunk


def count_words(docs: Iterable[Iterable[str]], special_tokens: Sequence[str],
                report=lambda message: None) -> Counter[bytes]:
    """Count the GPT-2 pieces (as UTF-8 bytes) of every document, special tokens cut out.

    A document arrives as chunks split anywhere; each chunk is counted up to the last
    `safe_cut` and the rest carried into the next, so the counts equal those of the whole.
    """
    counts: Counter[bytes] = Counter()
    special = special_pattern(frozenset(special_tokens)) if special_tokens else None
    longest_special = max(map(len, special_tokens), default=0)
    n_chars = 0
    for doc in docs:
        carry = ""
        for chunk in doc:
            text = carry + chunk
            cut = safe_cut(text, special, longest_special)
            count_text(text[:cut], special, counts)
            carry = text[cut:]
            n_chars += len(chunk)
            report(f"read {n_chars / 1e6:,.0f}M characters")
        count_text(carry, special, counts)
    return counts


def safe_cut(text: str, special: regex.Pattern | None, longest_special: int) -> int:
    """A place to cut text so that both halves split into the same pieces as the whole:
    between an ASCII non-space and a single ' ' or '\\n' followed by an ASCII non-space
    (the piece before ends there, and ' word' or '\\n' starts the next either way), not
    inside a special token nor where one could start and run past the end. 0 if none."""
    end = len(text) - max(longest_special, 2)
    while end > 0:
        cut = max(text.rfind(" ", 0, end), text.rfind("\n", 0, end))
        if cut <= 0:
            return 0
        end = cut
        if not all(text[i].isascii() and text[i] not in ASCII_SPACES for i in (cut - 1, cut + 1)):
            continue
        if special and any(m.start() < cut < m.end() for m in special.finditer(
                text, max(0, cut - longest_special), cut + longest_special)):
            continue
        return cut
    return 0


def count_text(text: str, special: regex.Pattern | None, counts: Counter[bytes]) -> None:
    """Add the pieces of `text`, special tokens cut out, to `counts`."""
    classes = codepoint_classes()
    # special_pattern captures, so split() alternates stretch, special, stretch, ...
    for stretch in (special.split(text)[::2] if special else [text]):
        data = utf8(stretch)
        ends = piece_ends(np.frombuffer(data, dtype=np.uint8), classes).tolist()
        counts.update(map(data.__getitem__, map(slice, [0] + ends, ends)))


class TrainState(NamedTuple):
    """Everything `run_merges` reads and writes, in arrays sized once for the whole run.

    Words: word_tokens (int64) holds each distinct word's current token ids at
    word_tokens[word_start[w]:word_start[w] + word_len[w]]; word_count (int64) its count;
    last_visit the merge that last visited it.
    Pairs, by pair index q: pair_left, pair_right, pair_count; pairs, a pair table from
    (left, right) to q; a linked list of the words q occurs in (may repeat or be stale):
    occ_head[q], then occ_word / occ_next; last_touch, the merge that last added to q.
    Queue: heap_pair, heap_count, a max-heap of (count when pushed, pair index).
    Tokens: token_start, token_len into pool (uint8), for comparing their bytes.
    merges: (n_merges, 2) int64, the pairs learned in order.
    counters: [pairs used, occurrences used, heap size, pool bytes used, merges done].
    touched, positions: scratch lists of pair indices and of merge positions in a word.
    """
    word_tokens: np.ndarray
    word_start: np.ndarray
    word_len: np.ndarray
    word_count: np.ndarray
    last_visit: np.ndarray
    pair_left: np.ndarray
    pair_right: np.ndarray
    pair_count: np.ndarray
    pairs: np.ndarray
    occ_head: np.ndarray
    occ_word: np.ndarray
    occ_next: np.ndarray
    last_touch: np.ndarray
    heap_pair: np.ndarray
    heap_count: np.ndarray
    token_start: np.ndarray
    token_len: np.ndarray
    pool: np.ndarray
    merges: np.ndarray
    counters: np.ndarray
    touched: np.ndarray
    positions: np.ndarray


N_PAIRS, N_OCC, HEAP_SIZE, POOL_USED, N_DONE = range(5)


def learn_merges(words: Counter[bytes], n_merges: int,
                 report=lambda message: None) -> list[tuple[int, int]]:
    """The (left id, right id) of up to `n_merges` merges learned from word counts."""
    state = initial_state(words, n_merges)
    while state.counters[N_DONE] < n_merges:
        target = min(n_merges, state.counters[N_DONE] + MERGES_PER_CALL)
        status = run_merges(state, target)
        if status == NO_PAIRS:
            report(f"no pairs left after {state.counters[N_DONE]:,} merges")
            break
        if status == POOL_FULL:
            state = state._replace(pool=np.concatenate([state.pool, state.pool]))
        report(f"merge {state.counters[N_DONE]:,}/{n_merges:,}")
    return [(a, b) for a, b in state.merges[:state.counters[N_DONE]].tolist()]


def initial_state(words: Counter[bytes], n_merges: int) -> TrainState:
    """The state before the first merge: words as byte ids, every pair counted and queued."""
    byte_order = list(bytes_to_unicode())
    byte_id = np.empty(256, dtype=np.int64)
    byte_id[byte_order] = np.arange(256)
    multi_byte = [w for w in words if len(w) > 1]  # one-byte words hold no pair
    lengths = np.fromiter(map(len, multi_byte), dtype=np.int64, count=len(multi_byte))
    word_tokens = byte_id[np.frombuffer(b"".join(multi_byte), dtype=np.uint8)]
    # Every merge of an occurrence breaks one pair and makes at most two, so no run needs
    # more pairs, occurrences or queue entries than three per starting token.
    room = 3 * len(word_tokens) + 16
    n_tokens = 256 + n_merges
    state = TrainState(
        word_tokens=word_tokens,
        word_start=np.concatenate([[0], np.cumsum(lengths)]),
        word_len=lengths,
        word_count=np.array([words[w] for w in multi_byte], dtype=np.int64),
        last_visit=np.full(len(multi_byte), -1, dtype=np.int64),
        pair_left=np.zeros(room, dtype=np.int64),
        pair_right=np.zeros(room, dtype=np.int64),
        pair_count=np.zeros(room, dtype=np.int64),
        pairs=empty_pair_table(room),
        occ_head=np.full(room, -1, dtype=np.int64),
        occ_word=np.zeros(room, dtype=np.int64),
        occ_next=np.zeros(room, dtype=np.int64),
        last_touch=np.full(room, -1, dtype=np.int64),
        heap_pair=np.zeros(room, dtype=np.int64),
        heap_count=np.zeros(room, dtype=np.int64),
        token_start=np.zeros(n_tokens, dtype=np.int64),
        token_len=np.zeros(n_tokens, dtype=np.int64),
        pool=np.zeros(max(1024, 8 * n_tokens), dtype=np.uint8),
        merges=np.zeros((n_merges, 2), dtype=np.int64),
        counters=np.zeros(5, dtype=np.int64),
        touched=np.zeros(room, dtype=np.int64),
        positions=np.zeros(max(lengths.max(initial=0), 1), dtype=np.int64))
    state.pool[:256] = byte_order
    state.token_start[:256] = np.arange(256)
    state.token_len[:256] = 1
    state.counters[POOL_USED] = 256
    count_pairs(state)
    return state


DONE, NO_PAIRS, POOL_FULL = range(3)  # how run_merges stopped


@njit(cache=True)
def pair_index(s, left, right):
    """The index of pair (left, right), made (count 0, in no word) if new."""
    q = pair_get(s.pairs, left, right)
    if q < 0:
        q = s.counters[N_PAIRS]
        s.counters[N_PAIRS] += 1
        pair_put(s.pairs, left, right, q)
        s.pair_left[q] = left
        s.pair_right[q] = right
    return q


@njit(cache=True)
def add_occurrence(s, q, word):
    """Note that pair q occurs in `word`."""
    k = s.counters[N_OCC]
    s.counters[N_OCC] += 1
    s.occ_word[k] = word
    s.occ_next[k] = s.occ_head[q]
    s.occ_head[q] = k


@njit(cache=True)
def bytes_less(s, x, y):
    """Whether token x's bytes sort before token y's (as Python compares bytes)."""
    x_start, x_len = s.token_start[x], s.token_len[x]
    y_start, y_len = s.token_start[y], s.token_len[y]
    for i in range(min(x_len, y_len)):
        if s.pool[x_start + i] != s.pool[y_start + i]:
            return s.pool[x_start + i] < s.pool[y_start + i]
    return x_len < y_len


@njit(cache=True)
def ahead(s, q1, count1, q2, count2):
    """Whether queue entry (count1, pair q1) comes before (count2, q2): the higher count, then
    the smaller (left bytes, right bytes)."""
    if count1 != count2:
        return count1 > count2
    if s.pair_left[q1] != s.pair_left[q2]:
        return bytes_less(s, s.pair_left[q1], s.pair_left[q2])
    return bytes_less(s, s.pair_right[q1], s.pair_right[q2])


@njit(cache=True)
def heap_push(s, q, count):
    """Queue pair q with `count`."""
    i = s.counters[HEAP_SIZE]
    s.counters[HEAP_SIZE] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not ahead(s, q, count, s.heap_pair[parent], s.heap_count[parent]):
            break
        s.heap_pair[i] = s.heap_pair[parent]
        s.heap_count[i] = s.heap_count[parent]
        i = parent
    s.heap_pair[i] = q
    s.heap_count[i] = count


@njit(cache=True)
def heap_pop(s):
    """Remove and return the first queue entry (pair, count)."""
    top_pair, top_count = s.heap_pair[0], s.heap_count[0]
    size = s.counters[HEAP_SIZE] - 1
    s.counters[HEAP_SIZE] = size
    q, count = s.heap_pair[size], s.heap_count[size]
    i = 0
    while 2 * i + 1 < size:
        child = 2 * i + 1
        if child + 1 < size and ahead(s, s.heap_pair[child + 1], s.heap_count[child + 1],
                                      s.heap_pair[child], s.heap_count[child]):
            child += 1
        if not ahead(s, s.heap_pair[child], s.heap_count[child], q, count):
            break
        s.heap_pair[i] = s.heap_pair[child]
        s.heap_count[i] = s.heap_count[child]
        i = child
    s.heap_pair[i] = q
    s.heap_count[i] = count
    return top_pair, top_count


@njit(cache=True)
def count_pairs(s):
    """Count every adjacent pair of every word, note where each occurs, queue them all."""
    for w in range(len(s.word_len)):
        start = s.word_start[w]
        for i in range(start, start + s.word_len[w] - 1):
            q = pair_index(s, s.word_tokens[i], s.word_tokens[i + 1])
            s.pair_count[q] += s.word_count[w]
            if s.last_touch[q] != -2 - w:  # each word once per pair
                s.last_touch[q] = -2 - w
                add_occurrence(s, q, w)
    for q in range(s.counters[N_PAIRS]):
        heap_push(s, q, s.pair_count[q])


@njit(cache=True)
def change_pair(s, left, right, delta, word, merge, n_touched):
    """Add `delta` to the count of (left, right); returns the new number of touched pairs.

    A pair that gains is noted as occurring in `word` and listed in s.touched once per merge,
    to be queued with its new count when the merge is done.
    """
    q = pair_index(s, left, right)
    s.pair_count[q] += delta
    if delta > 0:
        add_occurrence(s, q, word)
        if s.last_touch[q] != merge:
            s.last_touch[q] = merge
            s.touched[n_touched] = q
            n_touched += 1
    return n_touched


@njit(cache=True)
def merge_pair(s, q, new_token, merge):
    """Replace pair q by `new_token` in every word holding it, updating the pair counts."""
    a, b = s.pair_left[q], s.pair_right[q]
    n_touched = np.int64(0)  # np.int64, not 0: Numba would compile again for the literal
    k = s.occ_head[q]
    while k != -1:
        w = s.occ_word[k]
        k = s.occ_next[k]
        if s.last_visit[w] == merge:  # the list may name a word twice
            continue
        s.last_visit[w] = merge
        tokens = s.word_tokens[s.word_start[w]:s.word_start[w] + s.word_len[w]]
        n, count = len(tokens), s.word_count[w]
        n_pos = 0
        i = 0
        while i < n - 1:  # where the pair occurs, left to right without overlap
            if tokens[i] == a and tokens[i + 1] == b:
                s.positions[n_pos] = i
                n_pos += 1
                i += 2
            else:
                i += 1
        # Subtract the pairs the merges break; a pair between two merges only once.
        previous_end = -1
        for j in range(n_pos):
            p = s.positions[j]
            if p > 0 and p != previous_end:
                n_touched = change_pair(s, tokens[p - 1], a, -count, w, merge, n_touched)
            n_touched = change_pair(s, a, b, -count, w, merge, n_touched)
            if p + 2 < n:
                n_touched = change_pair(s, b, tokens[p + 2], -count, w, merge, n_touched)
            previous_end = p + 2
        j = 0
        i = 0
        for p in s.positions[:n_pos]:
            while i < p:
                tokens[j] = tokens[i]
                i += 1
                j += 1
            tokens[j] = new_token
            i += 2
            j += 1
        while i < n:
            tokens[j] = tokens[i]
            i += 1
            j += 1
        s.word_len[w] = j
        # Add the pairs the new token makes; a pair of two new tokens only once.
        for i in range(j):
            if tokens[i] == new_token:
                if i > 0:
                    n_touched = change_pair(s, tokens[i - 1], new_token, count, w, merge,
                                            n_touched)
                if i + 1 < j and tokens[i + 1] != new_token:
                    n_touched = change_pair(s, new_token, tokens[i + 1], count, w, merge,
                                            n_touched)
    for i in range(n_touched):
        t = s.touched[i]
        if s.pair_count[t] > 0:
            heap_push(s, t, s.pair_count[t])


@njit(cache=True)
def run_merges(s, target):
    """Learn merges until `target` are done; returns DONE, NO_PAIRS or POOL_FULL (grow
    s.pool and call again)."""
    while s.counters[N_DONE] < target:
        found = False
        while s.counters[HEAP_SIZE] > 0:
            q, count = heap_pop(s)
            if count == s.pair_count[q]:
                found = count > 0
                break
            if 0 < s.pair_count[q] < count:  # the count fell since: queue the true one
                heap_push(s, q, s.pair_count[q])
        if not found:
            return NO_PAIRS
        merge = s.counters[N_DONE]
        new_token = np.int64(256) + merge
        a, b = s.pair_left[q], s.pair_right[q]
        length = s.token_len[a] + s.token_len[b]
        start = s.counters[POOL_USED]
        if start + length > len(s.pool):
            heap_push(s, q, count)
            return POOL_FULL
        copy_range(s.pool, s.token_start[a], s.pool, start, s.token_len[a])
        copy_range(s.pool, s.token_start[b], s.pool, start + s.token_len[a], s.token_len[b])
        s.token_start[new_token] = start
        s.token_len[new_token] = length
        s.counters[POOL_USED] += length
        s.merges[merge, 0] = a
        s.merges[merge, 1] = b
        merge_pair(s, q, new_token, merge)
        s.counters[N_DONE] += 1
    return DONE
