"""bpe's GPT-2 tokenizer against tiktoken and Hugging Face tokenizers, which it must equal.

Three layers of evidence:
- the pre-tokenizer's character classes (bpe/unicode_classes.txt, Unicode 16.0) are the
  classes tiktoken's and tokenizers' regex engines use, on every code point they can be given
  (all but the surrogates), probed through the engines themselves;
- on hypothesis-drawn batches of text from many Unicode blocks (letters, marks and digits of
  many scripts, every kind of space, contractions, emoji sequences, private-use and unassigned
  code points, pieces of <|endoftext|>), ids, decoding, special-token handling and the batch
  functions equal tiktoken's, and ids equal tokenizers';
- tiktoken's API on bpe.Tokenizer returns the same types and raises the same errors.

tiktoken and tokenizers are built offline from GPT-2's encoder.json + vocab.bpe; each part is
skipped, with the reason, where they are not installed.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.unicode_classes import (LETTER, N_CODE_POINTS, NUMBER, OTHER, SPACE,
                                 codepoint_classes)
from test_bpe_encoder import gpt2, tiktoken_gpt2  # noqa: F401 (the fixtures)

# Every code point a Python str can hand a Rust regex engine: all but the surrogates.
CHECKABLE = np.array([cp for cp in range(N_CODE_POINTS) if not 0xD800 <= cp < 0xE000])
CLASS_REGEXES = {LETTER: r"\p{L}", NUMBER: r"\p{N}", SPACE: r"\s"}


@pytest.fixture(scope="session")
def hf_gpt2(gpt2_dir):
    tokenizers = pytest.importorskip("tokenizers", reason="Hugging Face tokenizers is not "
                                                          "installed (pip install tokenizers)")
    return tokenizers.ByteLevelBPETokenizer(str(gpt2_dir / "encoder.json"),
                                            str(gpt2_dir / "vocab.bpe"))


def tiktoken_matches(class_regex: str, cps: np.ndarray) -> np.ndarray:
    """(len(cps),) bool: whether tiktoken's regex engine puts each code point in `class_regex`.

    Code point c is probed as 'QQ' + c under the pattern QQ(?=class)|[\\s\\S], in a vocabulary
    of the 256 bytes and 'QQ': the two Qs are one piece, so one token, exactly when c is in
    the class, and two tokens otherwise. ('Q' itself is probed behind 'ZZ'.)
    """
    tiktoken = pytest.importorskip("tiktoken")
    matches = np.zeros(len(cps), dtype=bool)
    for marker, probed in (("Q", np.flatnonzero(cps != ord("Q"))),
                           ("Z", np.flatnonzero(cps == ord("Q")))):
        ranks = {bytes([b]): b for b in range(256)} | {(2 * marker).encode(): 256}
        encoding = tiktoken.Encoding(name="probe", pat_str=rf"{marker}{marker}(?={class_regex})"
                                     r"|[\s\S]", mergeable_ranks=ranks, special_tokens={})
        text = "".join([2 * marker + chr(cp) for cp in cps[probed].tolist()])
        ids = encoding.encode_to_numpy(text)
        # A probe starts with the token 'QQ' (weight 2) or with two tokens 'Q' (weight 1 each).
        probe_of = np.cumsum(2 * (ids == 256) + (ids == ord(marker))) // 2 - 1
        assert len(ids) == 0 or probe_of[-1] == len(probed) - 1
        matches[probed[probe_of[ids == 256]]] = True
    return matches


def tokenizers_matches(class_regex: str, cps: np.ndarray) -> np.ndarray:
    """(len(cps),) bool: whether tokenizers' regex engine puts each code point in
    `class_regex`, found by removing its matches from the code points joined into one string:
    the members are the characters that no piece left covers (pieces come with character
    offsets)."""
    tokenizers = pytest.importorskip("tokenizers")
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(class_regex), behavior="removed")
    pieces = split.pre_tokenize_str("".join(map(chr, cps.tolist())))
    starts, ends = np.array([offsets for _, offsets in pieces]).reshape(-1, 2).T
    depth = np.zeros(len(cps) + 1, dtype=np.int64)  # how many pieces cover each character
    np.add.at(depth, starts, 1)
    np.add.at(depth, ends, -1)
    return np.cumsum(depth)[:-1] == 0


def probed_classes(matches) -> np.ndarray:
    """(0x110000,) uint8: the class of every checkable code point as an engine has it, from
    `matches(class_regex, cps)`: first which code points are in any of the three classes,
    then which of those are in each (three short probes instead of three of every code
    point). Surrogates stay OTHER."""
    classes = np.full(N_CODE_POINTS, OTHER, dtype=np.uint8)
    members = CHECKABLE[matches(r"[\p{L}\p{N}\s]", CHECKABLE)]
    for cls, class_regex in CLASS_REGEXES.items():
        classes[members[matches(class_regex, members)]] = cls
    return classes


@pytest.mark.parametrize("matches", [tiktoken_matches, tokenizers_matches],
                         ids=["tiktoken", "tokenizers"])
def test_classes_equal_on_every_code_point(matches):
    differ = CHECKABLE[probed_classes(matches)[CHECKABLE] != codepoint_classes()[CHECKABLE]]
    assert [hex(cp) for cp in differ[:10]] == []


# Letters of Unicode 18.0: bpe once classed them by the installed regex, and differed.
@pytest.mark.parametrize("text, ids", [("\u209f'll", [158, 224, 253, 6, 297]),
                                       ("\U0001d6a6'd", [47728, 248, 99, 6, 67])])
def test_code_points_unassigned_in_unicode_16_give_tiktokens_ids(gpt2, tiktoken_gpt2, text,
                                                                 ids):
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text) == ids


@pytest.mark.parametrize("text, ids", [("\u209f'll", [158, 224, 253, 6, 297]),
                                       ("\U0001d6a6'd", [47728, 248, 99, 6, 67])])
def test_code_points_unassigned_in_unicode_16_give_tokenizers_ids(gpt2, hf_gpt2, text, ids):
    assert gpt2.encode(text) == hf_gpt2.encode(text).ids == ids


# (first, last) code points of the blocks text is drawn from: scripts with letters, marks and
# digits of their own, symbols, emoji, private use, unassigned stretches, and code points
# that became letters or digits after Unicode 16.0.
BLOCKS = [
    (0x00, 0x7F), (0x80, 0xFF), (0x100, 0x24F), (0x250, 0x2FF), (0x300, 0x36F),
    (0x370, 0x3FF), (0x400, 0x52F), (0x530, 0x58F), (0x590, 0x5FF), (0x600, 0x6FF),
    (0x700, 0x74F), (0x780, 0x7BF), (0x900, 0x97F), (0x980, 0x9FF), (0xB80, 0xCFF),
    (0xE00, 0xE7F), (0xF00, 0xFFF), (0x10A0, 0x10FF), (0x1100, 0x11FF), (0x1200, 0x139F),
    (0x13A0, 0x13FF), (0x1680, 0x169F), (0x1780, 0x18AF), (0x1C80, 0x1C8F), (0x1E00, 0x1FFF),
    (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20CF), (0x2100, 0x218F), (0x2460, 0x24FF),
    (0x2500, 0x25FF), (0x2C00, 0x2C5F), (0x3000, 0x30FF), (0x3400, 0x3480), (0x4E00, 0x4F00),
    (0xA000, 0xA04F), (0xA720, 0xA7FF), (0xA8E0, 0xA8FF), (0xAB60, 0xAB6F), (0xAC00, 0xAD00),
    (0xD7B0, 0xD7FF), (0xE000, 0xE0FF), (0xF8F0, 0xF8FF), (0xFB00, 0xFDFF), (0xFE00, 0xFE6F),
    (0xFF00, 0xFFEF), (0xFFF0, 0xFFFF), (0x10000, 0x1007F), (0x10330, 0x1034F),
    (0x10400, 0x1044F), (0x105C0, 0x105FF), (0x10D40, 0x10D8F), (0x11380, 0x113FF),
    (0x11F00, 0x11F5F), (0x12400, 0x1247F), (0x16D40, 0x16D7F), (0x1D400, 0x1D7FF),
    (0x1E4D0, 0x1E4FF), (0x1EC70, 0x1ECBF), (0x1F000, 0x1F0FF), (0x1F300, 0x1F6FF),
    (0x1F900, 0x1FAFF), (0x1FBF0, 0x1FBFF), (0x20000, 0x20100), (0x2EBF0, 0x2EE5F),
    (0x31350, 0x323AF), (0x3FFF0, 0x40010), (0xE0000, 0xE01EF), (0xF0000, 0xF0100),
    (0x10FF00, 0x10FFFF), (0x209D, 0x209F), (0x1D6A6, 0x1D6A7), (0x11DE0, 0x11DE9),
]
FRAGMENTS = [
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D",
    "'", "''", "’s", " 's", "n't", "DON'T", "I'm", "y'all",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85",
    "\xa0", "\u1680", "\u180e", "\u2000", "\u2007", "\u200a", "\u200b", "\u2028", "\u2029",
    "\u202f", "\u205f", "\u3000", "\ufeff",
    "0", "7", "42", " 1999", "3.14", "²", "½", "٣", "४", "Ⅻ", "０", "𝟘",
    "hello", " world", "Ω", " naïve", "中文", " 日本", "한국어", "e\u0301", "\u0301",
    "👍", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇫🇷", "❤️", "\u200d", "\ufe0f",
    "<|endoftext|>", "<|", "|>", "endoftext", "<|endoftext", "endoftext|>", "<|endoftext|",
    " <|endoftext|>", "<<|endoftext|>>", "<|endoftext|><|endoftext|>",
]
block_char = st.sampled_from(BLOCKS).flatmap(lambda block: st.integers(*block)).map(chr)
any_char = st.characters(exclude_categories=("Cs",))
fragment = st.one_of(block_char, block_char, any_char, st.sampled_from(FRAGMENTS))
texts = st.lists(fragment, max_size=16).map("".join)
batches = st.lists(texts, min_size=20, max_size=60)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_drawn_text_gives_tiktokens_ids_and_text_back(gpt2, tiktoken_gpt2, batch):
    expected = tiktoken_gpt2.encode_ordinary_batch(batch)
    assert [gpt2.encode_ordinary(text) for text in batch] == expected
    assert gpt2.encode_ordinary_batch(batch, num_threads=2) == expected
    assert gpt2.encode_batch(batch, disallowed_special=()) == expected
    ids, offsets = gpt2.encode_ordinary_batch_to_numpy(batch, num_threads=2)
    assert ids.tolist() == sum(expected, []) and np.diff(offsets).tolist() == list(map(len,
                                                                                     expected))
    assert gpt2.decode_batch(expected) == tiktoken_gpt2.decode_batch(expected) == batch
    assert gpt2.decode_bytes(ids) == tiktoken_gpt2.decode_bytes(ids.tolist())


def outcome(encode, text, **special):
    """encode(text, **special), or "ValueError" if it raises that."""
    try:
        return encode(text, **special)
    except ValueError:
        return "ValueError"


SPECIAL_ARGUMENTS = [{}, {"allowed_special": "all"}, {"disallowed_special": ()},
                     {"allowed_special": {"<|endoftext|>"}},
                     {"allowed_special": set(), "disallowed_special": {"<|endoftext|>"}}]


@settings(max_examples=40, deadline=None)
@given(batches)
def test_drawn_text_handles_special_tokens_as_tiktoken(gpt2, tiktoken_gpt2, batch):
    for special in SPECIAL_ARGUMENTS:
        expected = [outcome(tiktoken_gpt2.encode, text, **special) for text in batch]
        assert [outcome(gpt2.encode, text, **special) for text in batch] == expected
        assert [outcome(lambda t, **s: gpt2.encode_to_numpy(t, **s).tolist(), text, **special)
                for text in batch] == expected
        batch_expected = outcome(tiktoken_gpt2.encode_batch, batch, num_threads=2, **special)
        assert outcome(gpt2.encode_batch, batch, num_threads=2, **special) == batch_expected


@settings(max_examples=50, deadline=None)
@given(batches)
def test_drawn_text_gives_tokenizers_ids(gpt2, hf_gpt2, batch):
    expected = [encoding.ids for encoding in hf_gpt2.encode_batch(batch)]
    assert gpt2.encode_ordinary_batch(batch) == expected


def test_vocabulary_facts_equal_tiktoken(gpt2, tiktoken_gpt2):
    for name in ("n_vocab", "max_token_value", "eot_token", "special_tokens_set"):
        ours, theirs = getattr(gpt2, name), getattr(tiktoken_gpt2, name)
        assert type(ours) is type(theirs) and ours == theirs, name


@pytest.mark.parametrize("text_or_bytes", ["hello", b"hello", " the", "<|endoftext|>",
                                           b"<|endoftext|>", b"\xff", "!", b"\xe2\x80"])
def test_encode_single_token_equals_tiktoken(gpt2, tiktoken_gpt2, text_or_bytes):
    token = gpt2.encode_single_token(text_or_bytes)
    assert type(token) is int and token == tiktoken_gpt2.encode_single_token(text_or_bytes)


@pytest.mark.parametrize("text_or_bytes, error", [
    ("hello world", KeyError), (b"", KeyError), ("", KeyError), (b"\xff\xfe", KeyError),
    ("<|endoftext|> ", KeyError), (5, TypeError), ("\ud800", UnicodeEncodeError)])
def test_encode_single_token_raises_as_tiktoken(gpt2, tiktoken_gpt2, text_or_bytes, error):
    for encoding in (gpt2, tiktoken_gpt2):
        with pytest.raises(error):
            encoding.encode_single_token(text_or_bytes)


@pytest.mark.parametrize("token", [0, 255, 256, 31373, 50255, 50256, np.int64(5),
                                   np.uint32(995)])
def test_decode_single_token_bytes_equals_tiktoken(gpt2, tiktoken_gpt2, token):
    data = gpt2.decode_single_token_bytes(token)
    assert type(data) is bytes and data == tiktoken_gpt2.decode_single_token_bytes(token)


@pytest.mark.parametrize("token, error", [(50257, KeyError), (2 ** 32 - 1, KeyError),
                                          (1.0, TypeError), ("7", TypeError)])
def test_decode_single_token_bytes_raises_as_tiktoken(gpt2, tiktoken_gpt2, token, error):
    for encoding in (gpt2, tiktoken_gpt2):
        with pytest.raises(error):
            encoding.decode_single_token_bytes(token)


def test_decode_tokens_bytes_equals_tiktoken(gpt2, tiktoken_gpt2):
    ids = tiktoken_gpt2.encode("Hello, wörld! 👍<|endoftext|>", allowed_special="all")
    assert gpt2.decode_tokens_bytes(ids) == tiktoken_gpt2.decode_tokens_bytes(ids)
    assert gpt2.decode_tokens_bytes(np.array(ids)) == tiktoken_gpt2.decode_tokens_bytes(ids)
    assert gpt2.decode_tokens_bytes([]) == []
    for encoding in (gpt2, tiktoken_gpt2):
        with pytest.raises(KeyError):
            encoding.decode_tokens_bytes([31373, 50257])


def test_decode_and_decode_batch_equal_tiktoken(gpt2, tiktoken_gpt2):
    half = gpt2.encode_single_token(b"\xc3")  # half of 'é'
    batch = [[31373, 995], [], [half], [31373, half, 995], [50256]]
    for errors in ("replace", "ignore", "backslashreplace"):
        assert gpt2.decode_batch(batch, errors=errors) == \
            tiktoken_gpt2.decode_batch(batch, errors=errors)
        assert [gpt2.decode(ids, errors=errors) for ids in batch] == \
            [tiktoken_gpt2.decode(ids, errors=errors) for ids in batch]
    assert gpt2.decode_bytes_batch(batch) == tiktoken_gpt2.decode_bytes_batch(batch)
    for encoding in (gpt2, tiktoken_gpt2):
        with pytest.raises(UnicodeDecodeError):
            encoding.decode([half], errors="strict")
        with pytest.raises(KeyError):
            encoding.decode([50257])
        with pytest.raises(KeyError):
            encoding.decode_batch([[1], [50257]])


def test_unknown_ids_raise_a_key_error_that_is_a_value_error_too(gpt2):
    with pytest.raises(ValueError, match="^token id 50257 is out of range"):
        gpt2.decode([50257])
    with pytest.raises(bpe.UnknownTokenError, match="^token id -1 is out of range"):
        gpt2.decode_single_token_bytes(-1)  # tiktoken: OverflowError
    with pytest.raises(bpe.UnknownTokenError, match="^b'hello world' is not one token"):
        gpt2.encode_single_token(b"hello world")


def test_encode_to_numpy_equals_tiktoken(gpt2, tiktoken_gpt2):
    for text, special in [("hello world", {}), ("", {}), ("a<|endoftext|>b", {"allowed_special":
                                                                              "all"}),
                          ("<|endoftext|>", {"disallowed_special": ()})]:
        ours, theirs = gpt2.encode_to_numpy(text, **special), \
            tiktoken_gpt2.encode_to_numpy(text, **special)
        assert type(ours) is np.ndarray and ours.dtype == theirs.dtype == np.uint32
        assert ours.tolist() == theirs.tolist()
    for encoding in (gpt2, tiktoken_gpt2):
        with pytest.raises(ValueError, match="special token"):
            encoding.encode_to_numpy("a<|endoftext|>")


def encode_every_way(encoding, text):
    """The ids of `text` from each list-returning encode function of `encoding`."""
    return [encoding.encode(text, allowed_special="all"), encoding.encode_ordinary(text),
            *encoding.encode_batch([text], allowed_special="all"),
            *encoding.encode_ordinary_batch([text])]


def test_encode_functions_return_lists_of_python_ints(gpt2, tiktoken_gpt2):
    text = "Hello world<|endoftext|>"
    ours = encode_every_way(gpt2, text)
    assert ours == encode_every_way(tiktoken_gpt2, text)
    assert all(type(ids) is list and all(type(token) is int for token in ids) for ids in ours)
