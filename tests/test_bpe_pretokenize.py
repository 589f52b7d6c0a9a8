"""The fast pre-tokenizer must split exactly as GPT-2's regular expression does.

`split_reference` runs GPT-2's pattern with the `regex` package; `split` is the Numba scanner.
They are compared on hand-picked hard cases, on hypothesis-drawn strings (from a tricky
alphabet and from every Unicode category), and on the test corpora.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpe.pretokenize import (LETTER, NUMBER, OTHER, SPACE, codepoint_classes, split,
                             split_reference, utf8)

# Characters where the pattern's alternatives meet: every kind of whitespace, the letters of
# the contractions in both cases, apostrophes, digits of several scripts, punctuation,
# letters beyond ASCII, combining marks, emoji with joiners, controls.
TRICKY = (" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u3000"
          "'’sStTrReEvVlLmMdDxX"
          "09²½٣Ⅻ"
          "!?.,-_()\"#@"
          "aéßΩжא中日ｱ한"
          "\u0301\u0308\u200d\ufe0f👍🏽👨‍👩‍👧🇫🇷"
          "\x00\x01\x1b\x1c\x1f\x7f")

HARD_CASES = [
    "", " ", "  ", "\n", "\n\n\n", " \n", "\n ", "\t\t", "a  b", "a \n b", "hello   world",
    "trailing space ", "trailing spaces   ", "trailing newline\n", "tabs\tand\tmore\t\t",
    "DON'T", "don't", "I'M", "I'm", "'S", "'s", "'re 've 'll 'd 'm 't", "''s", "' s",
    "rock'n'roll", "'", "''", "'''", "x'", "'x", "can't've", "o'er", "y'all",
    "1234567890", "3.14159", "v2.0", "1,000,000", " 42", "²³", "٣٤٥", "ⅫⅣ",
    "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "a👍b", "emoji 😀😀 run",
    "中文字符测试", "日本語のテキスト", "한국어", "Ｆｕｌｌ　ｗｉｄｔｈ",
    "e\u0301", "n\u0303o", "a\u0308\u0308", "\u0301 start",
    "\x00\x01\x02", "\x1b[31mred\x1b[0m", "\x1c\x1d\x1e\x1f", "\r\n\r\n",
    "def f(x):\n    return x ** 2  # square\n", "if (a&&b) { c(); }", "<|endoftext|>",
    "http://example.com/a?b=c&d=e", "    indented\n\tcode", "\u00a0nbsp\u00a0", "\u3000ideo",
]


def assert_same_split(text):
    assert split(text) == split_reference(text)


@pytest.mark.parametrize("text", HARD_CASES)
def test_scanner_matches_regex_on_hard_cases(text):
    assert_same_split(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=40))
def test_scanner_matches_regex_on_tricky_text(text):
    assert_same_split(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40))
def test_scanner_matches_regex_on_any_text(text):
    assert_same_split(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([" ", "  ", "\n", "\t", "'s", "'ll", "'", "DON'T", "ab", "12",
                                 "!!", "é", "中", "👍", "\u0301"]), max_size=20).map("".join))
def test_scanner_matches_regex_on_joined_fragments(text):
    assert_same_split(text)


def test_scanner_matches_regex_on_every_corpus(data_dir):
    paths = sorted(data_dir.glob("*.txt"))
    assert len(paths) >= 2
    for path in paths:
        assert_same_split(path.read_text(encoding="utf-8"))


def test_codepoint_classes_follow_regex_categories():
    classes = codepoint_classes()
    assert [classes[ord(c)] for c in "aé中"] == [LETTER] * 3
    assert [classes[ord(c)] for c in "7²٣"] == [NUMBER] * 3
    assert [classes[ord(c)] for c in " \t\n\u3000\x85"] == [SPACE] * 5
    assert [classes[ord(c)] for c in "'!\u0301\x1c👍"] == [OTHER] * 5


def test_lone_surrogates_become_replacement_characters():
    assert utf8("a\ud800b") == "a\ufffdb".encode()
    assert utf8("\ud83d\ude00") == "😀".encode()  # a surrogate pair joins into one character
    assert split("a\ud800b") == split_reference("a\ufffdb")
