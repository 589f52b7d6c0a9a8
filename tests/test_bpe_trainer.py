"""The trainer must learn exactly the merges of a brute-force trainer, and save files that this
encoder, Hugging Face `tokenizers` and tiktoken all read into the same ids.

`train_reference` below is BPE training at its plainest: count every pair in every word,
take the most frequent (ties: the smallest (left bytes, right bytes)), merge it everywhere,
count again from scratch.
"""
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe import trainer
from bpe.files import bytes_to_unicode
from bpe.trainer import count_words, train
from test_bpe_encoder import GPT2_PATTERN, tiktoken_encoding
from test_bpe_pretokenize import HARD_CASES

SPECIALS = ["<|endoftext|>", "<s>", "<s>x"]


def reference_word_counts(texts, specials=()):
    """Pieces of each text by GPT-2's pattern, special tokens cut out first."""
    counts = Counter()
    for text in texts:
        stretches = [text]
        if specials:
            pattern = "|".join(map(regex.escape, sorted(specials, key=len, reverse=True)))
            stretches = regex.split(pattern, text)
        for stretch in stretches:
            counts.update(piece.encode() for piece in regex.findall(GPT2_PATTERN, stretch))
    return counts


def merge_everywhere(parts, pair):
    merged, i = [], 0
    while i < len(parts):
        if tuple(parts[i:i + 2]) == pair:
            merged.append(parts[i] + parts[i + 1])
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged


def train_reference(word_counts, n_merges):
    """The merges, as (left bytes, right bytes), of brute-force BPE training."""
    words = {word: [bytes([b]) for b in word] for word in word_counts}
    merges = []
    for _ in range(n_merges):
        pair_counts = Counter()
        for word, parts in words.items():
            for pair in zip(parts, parts[1:]):
                pair_counts[pair] += word_counts[word]
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        words = {word: merge_everywhere(parts, best) for word, parts in words.items()}
    return merges


def merges_as_bytes(tokenizer):
    return [(tokenizer.tokens[a], tokenizer.tokens[b]) for a, b in tokenizer.merges]


def test_merges_equal_brute_force_on_a_small_corpus(data_dir):
    text = (data_dir / "the-verdict.txt").read_text(encoding="utf-8")[:6000]
    tokenizer = train(text, 256 + 150, special_tokens=())
    assert merges_as_bytes(tokenizer) == train_reference(reference_word_counts([text]), 150)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="aab \n'sé", max_size=40), max_size=4))
def test_merges_equal_brute_force_on_drawn_corpora(texts):
    # A tiny alphabet makes many equal counts (ties) and runs like 'aaaa' (overlaps).
    tokenizer = train(texts, 256 + 60, special_tokens=())
    assert merges_as_bytes(tokenizer) == train_reference(reference_word_counts(texts), 60)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*"ab '\n\t.1é中x", "<s>", "<s>x", "<|endoftext|>", "  "]),
                max_size=40).map("".join),
       st.lists(st.integers(0, 80), max_size=6))
def test_word_counts_do_not_depend_on_where_chunks_end(text, cuts):
    cuts = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    counts = count_words([iter(chunks)], SPECIALS)
    assert counts == reference_word_counts([text], SPECIALS)


def test_streamed_file_trains_like_the_whole_text(data_dir, monkeypatch):
    path = data_dir / "the-verdict.txt"
    whole = train(path.read_text(encoding="utf-8"), 512)
    monkeypatch.setattr(trainer, "CHUNK_CHARS", 1000)
    streamed = train(path, 512)
    assert streamed.merges == whole.merges


def test_ids_are_bytes_in_gpt2_order_then_merges_then_specials(gpt2_dir):
    texts = ["the quick brown fox jumps over the lazy dog", "<|endoftext|>the dog"]
    tokenizer = train(texts, 270, ["<|endoftext|>", "<x>"])
    gpt2 = bpe.load(gpt2_dir)
    assert tokenizer.tokens[:256] == gpt2.tokens[:256]
    assert tokenizer.n_vocab == 270
    assert tokenizer.special_tokens == {"<|endoftext|>": 268, "<x>": 269}
    assert tokenizer.eot_token == 268
    assert [tokenizer.tokens[a] + tokenizer.tokens[b] for a, b in tokenizer.merges] == \
        tokenizer.tokens[256:268]
    assert b"<|" + b"endoftext" not in tokenizer.tokens[256:268]  # specials are not learned


def test_training_stops_when_no_pairs_are_left():
    tokenizer = train("ab ab", 1000, special_tokens=())
    assert merges_as_bytes(tokenizer) == [(b"a", b"b"), (b" ", b"ab")]
    assert tokenizer.n_vocab == 258


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match="at least 257"):
        train("text", 256)
    with pytest.raises(ValueError, match="non-empty strings"):
        train("text", 300, [""])


def test_non_utf8_files_are_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8 text"):
        train(path, 300)


def test_progress_is_reported_only_when_asked(capsys):
    lines = []
    train("some text to train on", 270, progress=lines.append)
    assert any("learning 13 merges" in line for line in lines)
    train("some text to train on", 270)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def shakespeare_tokenizer(data_dir, tmp_path_factory):
    """A 4096-token vocabulary trained on tiny Shakespeare, saved: (tokenizer, folder, text)."""
    path = data_dir / "tinyshakespeare.txt"
    tokenizer = train(path, 4096)
    folder = tmp_path_factory.mktemp("shakespeare-4096")
    tokenizer.save(folder)
    return tokenizer, folder, path.read_text(encoding="utf-8")


def test_saved_vocabulary_loads_back_into_the_same_tokenizer(shakespeare_tokenizer):
    tokenizer, folder, text = shakespeare_tokenizer
    loaded = bpe.load(folder)
    assert loaded.tokens == tokenizer.tokens
    assert loaded.merges == tokenizer.merges
    assert loaded.special_tokens == tokenizer.special_tokens == {"<|endoftext|>": 4095}
    ids = loaded.encode(text)
    assert ids == tokenizer.encode(text)
    assert loaded.decode(ids) == text
    assert len(ids) < len(text) / 3  # it compresses its own training text


def test_trained_tokenizer_fast_path_equals_plain_python_path(shakespeare_tokenizer):
    tokenizer, _, text = shakespeare_tokenizer
    sample = text[:20000] + "".join(HARD_CASES)
    assert tokenizer.encode_ordinary(sample) == tokenizer.encode_ordinary_reference(sample)


def texts_to_compare(text):
    return [text[:200000], *HARD_CASES]


def test_hugging_face_tokenizers_read_the_saved_files_to_the_same_ids(shakespeare_tokenizer):
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer, folder, text = shakespeare_tokenizer
    hf = tokenizers.ByteLevelBPETokenizer(str(folder / "encoder.json"),
                                          str(folder / "vocab.bpe"))
    for sample in texts_to_compare(text):
        assert hf.encode(sample).ids == tokenizer.encode_ordinary(sample), sample


def test_tiktoken_reads_the_saved_files_to_the_same_ids(shakespeare_tokenizer):
    tokenizer, folder, text = shakespeare_tokenizer
    encoding = tiktoken_encoding(Path(folder))
    for sample in texts_to_compare(text):
        assert encoding.encode_ordinary(sample) == tokenizer.encode_ordinary(sample), sample


def test_first_ids_follow_gpt2_byte_order():
    assert list(bytes_to_unicode())[:3] == [ord("!"), ord('"'), ord("#")]
    tokenizer = train("", 257)
    assert tokenizer.tokens[0] == b"!"


def test_non_ascii_special_tokens_survive_save_and_load(tmp_path):
    tokenizer = train("a b c a b", 262, ["<|endoftext|>", "<|é中|>"])
    tokenizer.save(tmp_path)
    loaded = bpe.load(tmp_path)
    assert loaded.special_tokens == tokenizer.special_tokens
    assert loaded.encode("a<|é中|>", allowed_special="all") == [tokenizer.tokens.index(b"a"),
                                                                  tokenizer.special_tokens["<|é中|>"]]
