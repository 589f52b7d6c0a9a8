"""The tokenizer loaded from GPT-2's files must give GPT-2's ids on every input.

"GPT-2's ids" are those of `ReferenceGPT2`, OpenAI's original encoder.py logic written out
plainly below (regex split, byte-to-unicode strings, the textbook `bpe` loop), and of
tiktoken's GPT-2 encoding built from the same files, when tiktoken is installed. The
reference splits with GPT-2's pattern as bpe pins it (its classes as Unicode 16.0's ranges,
the version tiktoken uses), so it does not move with the installed `regex`;
tests/test_bpe_tiktoken.py compares with tiktoken itself on text from every Unicode block.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.encoder import (LONG_WORD, merge_long_word, merge_word, merge_word_reference,
                         split_evenly)
from bpe.files import VocabError
from bpe.pretokenize import pinned_pattern
from test_bpe_pretokenize import HARD_CASES, TRICKY

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_byte_encoder():
    """GPT-2's bytes_to_unicode, as in encoder.py."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ReferenceGPT2:
    """OpenAI's GPT-2 encoder.py, written plainly: the definition of GPT-2's ids."""

    def __init__(self, folder):
        self.encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
        lines = (folder / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
        self.bpe_ranks = {tuple(line.split()): i for i, line in enumerate(lines)}
        self.byte_encoder = gpt2_byte_encoder()
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        for token in pinned_pattern().findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[part] for part in self.bpe(token))
        return ids


@pytest.fixture(scope="session")
def gpt2(gpt2_dir):
    return bpe.gpt2(gpt2_dir)


@pytest.fixture(scope="session")
def reference(gpt2_dir):
    return ReferenceGPT2(gpt2_dir)


def tiktoken_encoding(folder):
    """tiktoken's GPT-2 encoding built offline from encoder.json (ranks are the ids)."""
    tiktoken = pytest.importorskip("tiktoken")
    byte_decoder = {c: b for b, c in gpt2_byte_encoder().items()}
    encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    specials = {"<|endoftext|>"} & set(encoder)
    ranks = {bytes(byte_decoder[c] for c in text): i for text, i in encoder.items()
             if text not in specials}
    return tiktoken.Encoding(name=f"from-{folder.name}", pat_str=GPT2_PATTERN,
                             mergeable_ranks=ranks,
                             special_tokens={s: encoder[s] for s in specials})


@pytest.fixture(scope="session")
def tiktoken_gpt2(gpt2_dir):
    return tiktoken_encoding(gpt2_dir)


def test_gpt2_vocabulary_facts(gpt2):
    assert gpt2.n_vocab == 50257
    assert gpt2.eot_token == 50256
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.encode("Hello world") == [15496, 995]


def corpora(data_dir):
    """(name, text) of every .txt file in the shared data folder."""
    paths = sorted(data_dir.glob("*.txt"))
    assert {p.name for p in paths} >= {"tinyshakespeare.txt", "the-verdict.txt"}
    return [(p.name, p.read_text(encoding="utf-8")) for p in paths]


def test_gpt2_ids_on_every_corpus(gpt2, reference, data_dir):
    for name, text in corpora(data_dir):
        ids = gpt2.encode(text)
        assert ids == reference.encode(text), name
        assert gpt2.decode(ids) == text, name


def test_gpt2_ids_on_every_corpus_equal_tiktoken(gpt2, tiktoken_gpt2, data_dir):
    for name, text in corpora(data_dir):
        assert gpt2.encode(text) == tiktoken_gpt2.encode(text), name


@pytest.mark.parametrize("text", HARD_CASES + ["x" * 3000, "7" * 1000, "=" * 500,
                                                    " " * 700 + "x", "ab" * 400])
def test_gpt2_ids_on_hard_cases(gpt2, reference, text):
    assert gpt2.encode(text, disallowed_special=()) == reference.encode(text)


@pytest.mark.parametrize("text", HARD_CASES)
def test_gpt2_ids_on_hard_cases_equal_tiktoken(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=60)
       | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30))
def test_gpt2_ids_on_drawn_text(gpt2, reference, text):
    assert gpt2.encode_ordinary(text) == reference.encode(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=50))
def test_decode_inverts_encode(gpt2, text):
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


def test_fast_path_equals_plain_python_path(gpt2, data_dir):
    text = (data_dir / "the-verdict.txt").read_text(encoding="utf-8")
    assert gpt2.encode_ordinary(text) == gpt2.encode_ordinary_reference(text)


def test_empty_text(gpt2):
    assert gpt2.encode("") == []
    assert gpt2.encode_ordinary("") == []
    assert gpt2.encode_batch([]) == []
    assert gpt2.encode_batch(["", ""]) == [[], []]
    assert gpt2.decode([]) == ""


def test_special_token_text_is_refused_unless_allowed_or_ordinary(gpt2, reference):
    text = "a<|endoftext|>b"
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'"):
        gpt2.encode(text)
    assert gpt2.encode(text, allowed_special="all") == gpt2.encode("a") + [50256] + \
        gpt2.encode("b")
    assert gpt2.encode(text, allowed_special={"<|endoftext|>"}) == \
        gpt2.encode(text, allowed_special="all")
    ordinary = reference.encode(text)
    assert gpt2.encode(text, disallowed_special=()) == ordinary
    assert gpt2.encode_ordinary(text) == ordinary
    assert 50256 not in ordinary
    assert gpt2.encode("<|endoftext|><|endoftext|>", allowed_special="all") == [50256, 50256]
    with pytest.raises(ValueError, match="not a special token"):
        gpt2.encode("x", allowed_special={"<|nope|>"})


def test_special_tokens_equal_tiktoken(gpt2, tiktoken_gpt2):
    text = "one<|endoftext|> two <|endoftext|>"
    assert gpt2.encode(text, allowed_special="all") == \
        tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.encode(text, disallowed_special=()) == \
        tiktoken_gpt2.encode(text, disallowed_special=())


def test_encode_batch_equals_encode(gpt2, data_dir):
    texts = (data_dir / "the-verdict.txt").read_text(encoding="utf-8").split("\n\n")
    texts += ["", "<|endoftext|>", "x<|endoftext|>y"]
    expected = [gpt2.encode(t, allowed_special="all") for t in texts]
    assert gpt2.encode_batch(texts, allowed_special="all") == expected
    assert gpt2.encode_batch(texts, num_threads=3, allowed_special="all") == expected
    with pytest.raises(ValueError, match="special token"):
        gpt2.encode_batch(texts)


def test_special_tokens_inside_a_batch_land_between_the_right_stretches(gpt2):
    texts = ["a<|endoftext|>b<|endoftext|>", "", "<|endoftext|>", "no special", "x<|endoftext|>"]
    expected = [gpt2.encode(t, allowed_special="all") for t in texts]
    assert expected[0] == gpt2.encode("a") + [50256] + gpt2.encode("b") + [50256]
    assert gpt2.encode_batch(texts, num_threads=1, allowed_special="all") == expected
    assert [gpt2.encode_to_numpy(t, allowed_special="all").tolist() for t in texts] == expected


def test_encode_ordinary_batch_to_numpy_equals_encode_ordinary(gpt2, data_dir):
    texts = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n\n")
    texts += HARD_CASES + ["", "<|endoftext|>", "x" * 3000]
    expected = [gpt2.encode_ordinary(t) for t in texts]
    for num_threads in (1, 3, None):
        ids, offsets = gpt2.encode_ordinary_batch_to_numpy(texts, num_threads=num_threads)
        assert ids.dtype == np.uint32 and offsets.dtype == np.int64
        assert offsets.shape == (len(texts) + 1,) and offsets[0] == 0 and offsets[-1] == len(ids)
        assert [ids[start:end].tolist() for start, end in zip(offsets, offsets[1:])] == expected
    ids, offsets = gpt2.encode_ordinary_batch_to_numpy([])
    assert ids.dtype == np.uint32 and ids.shape == (0,) and offsets.tolist() == [0]


def test_encode_to_numpy_equals_encode(gpt2, data_dir):
    text = (data_dir / "the-verdict.txt").read_text(encoding="utf-8")
    ids = gpt2.encode_to_numpy(text)
    assert ids.dtype == np.uint32 and ids.tolist() == gpt2.encode(text)


def test_decode_batch_equals_decode(gpt2, data_dir):
    texts = (data_dir / "the-verdict.txt").read_text(encoding="utf-8").split("\n\n")
    batch = [gpt2.encode(t) for t in texts] + [[], [gpt2.encode_single_token(b"\xc3")]]
    assert gpt2.decode_batch(batch, num_threads=3) == [gpt2.decode(ids) for ids in batch]
    assert gpt2.decode_bytes_batch(batch) == [gpt2.decode_bytes(ids) for ids in batch]
    assert gpt2.decode_batch([]) == []


def test_split_evenly_keeps_order_and_items():
    items = list(range(10))
    for n in (1, 3, 4, 10, 20):
        groups = split_evenly(items, n)
        assert len(groups) <= n and sum(groups, []) == items


def test_decode_replaces_partial_characters(gpt2):
    ids = gpt2.encode("é中")
    assert gpt2.decode_bytes(ids) == "é中".encode()
    first_byte = [gpt2.tokens.index(bytes([0xC3]))]
    assert gpt2.decode(first_byte) == "\ufffd"
    assert gpt2.decode_bytes(first_byte) == b"\xc3"
    assert gpt2.decode(np.array(ids)) == "é中"


@pytest.mark.parametrize("ids", [[50257], [-1], [0, 10 ** 30], [1.5]])
def test_decode_rejects_ids_out_of_range(gpt2, ids):
    with pytest.raises(ValueError, match="out of range.*0..50256"):
        gpt2.decode(ids)


def test_lone_surrogates_encode_as_replacement_character(gpt2):
    assert gpt2.encode("a\ud800") == gpt2.encode("a\ufffd")


@pytest.fixture(scope="session")
def gpt2_ranks(gpt2):
    """(pair -> rank, rank -> merged id) of GPT-2, for merge_word_reference."""
    ranks = {pair: rank for rank, pair in enumerate(gpt2.merges)}
    return ranks, gpt2._tables.merge_result.tolist()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40)
       | st.lists(st.sampled_from([b"a", b"b", b"ab", b" ", b"th", b"e", b"1", b"="]),
                  min_size=1, max_size=LONG_WORD).map(b"".join))
def test_merge_kernels_equal_reference(gpt2, gpt2_ranks, word):
    ranks, merge_result = gpt2_ranks
    byte_ids = gpt2._tables.byte_ids
    ids = [int(byte_ids[b]) for b in word]
    expected = merge_word_reference(ids, ranks, merge_result)
    short = np.array(ids, dtype=np.int32)
    n = merge_word(short, np.empty(len(ids), dtype=np.int64), gpt2._tables)
    long = np.array(ids, dtype=np.int32)
    m = merge_long_word(long, gpt2._tables)
    assert short[:n].tolist() == expected
    assert long[:m].tolist() == expected


def test_every_gpt2_token_round_trips(gpt2):
    ids = list(range(gpt2.n_vocab))
    assert gpt2.decode_bytes(ids) == b"".join(gpt2.tokens)


def test_save_writes_gpt2_files_byte_for_byte(gpt2, gpt2_dir, tmp_path):
    gpt2.save(tmp_path)
    for name in ("encoder.json", "vocab.bpe"):
        assert (tmp_path / name).read_bytes() == (gpt2_dir / name).read_bytes()


def test_hugging_face_file_names_load_too(gpt2, gpt2_dir, tmp_path):
    (tmp_path / "vocab.json").write_bytes((gpt2_dir / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((gpt2_dir / "vocab.bpe").read_bytes())
    assert bpe.load(tmp_path).encode("Hello world!") == gpt2.encode("Hello world!")
    assert bpe.gpt2(tmp_path).encode("Hello world!") == gpt2.encode("Hello world!")


def test_gpt2_loads_gpt2s_files_and_refuses_other_vocabularies(gpt2_dir, tmp_path):
    assert bpe.gpt2(gpt2_dir).encode("Hello world") == [15496, 995]
    bpe.train("a small corpus of text, a small corpus", 300).save(tmp_path)
    with pytest.raises(VocabError, match="not GPT-2's; read it with bpe.load"):
        bpe.gpt2(tmp_path)


def write_vocab_files(folder, encoder, merges):
    folder.mkdir(exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges),
                                      encoding="utf-8")
    return folder


def byte_encoder_vocab():
    return {c: i for i, c in enumerate(gpt2_byte_encoder().values())}


@pytest.mark.parametrize("encoder, merges, message", [
    ("not json", [], "not valid JSON"),
    ([1, 2], [], "one JSON object"),
    ({"a": 0, "b": 2}, [], "not 0..1"),
    (byte_encoder_vocab(), ["a b"], "needs token 'ab'"),
    ({**byte_encoder_vocab(), "ab": 256}, ["a b c"], "two tokens separated by one space"),
    ({**byte_encoder_vocab(), "ab": 256}, ["a"], "two tokens separated by one space"),
    ({"a": 0}, [], "no token for byte"),
])
def test_corrupt_vocabulary_files_raise_one_clear_error(tmp_path, encoder, merges, message):
    folder = write_vocab_files(tmp_path / "vocab", encoder, merges)
    if isinstance(encoder, str):
        (folder / "encoder.json").write_text(encoder)
    with pytest.raises(VocabError, match=message):
        bpe.load(folder)


def test_missing_vocabulary_files_raise_one_clear_error(tmp_path):
    with pytest.raises(VocabError, match="does not exist"):
        bpe.load(tmp_path / "nowhere")
    with pytest.raises(VocabError, match="holds neither encoder.json"):
        bpe.load(tmp_path)


def test_tokenizer_checks_its_arguments():
    tokens = [bytes([b]) for b in range(256)]
    with pytest.raises(ValueError, match="which is not a token"):
        bpe.Tokenizer(tokens, [(97, 98)])
    with pytest.raises(ValueError, match="both"):
        bpe.Tokenizer(tokens + [b"a"], [])
    with pytest.raises(ValueError, match="whose bytes are not its text"):
        bpe.Tokenizer(tokens + [b"<s>"], [], {"<x>": 256})
    tokenizer = bpe.Tokenizer(tokens + [b"ab", b"<s>"], [(97, 98)], {"<s>": 257})
    assert tokenizer.encode("abab<s>", allowed_special="all") == [256, 256, 257]
    assert tokenizer.eot_token is None
