"""The fast pre-tokenizer must split exactly as GPT-2's regular expression does.

`split_reference` runs GPT-2's pattern, its classes written out as Unicode 16.0's ranges, with
Python's `re`; `split` is the Numba scanner. They are compared on hand-picked hard cases, on
hypothesis-drawn strings (from a tricky alphabet and from every Unicode category), and on the
test corpora. (tests/test_bpe_tiktoken.py checks the classes against tiktoken's.)
"""
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from bpe.pretokenize import GPT2_PATTERN, split, split_reference, utf8
from bpe.unicode_classes import LETTER, NUMBER, OTHER, SPACE, TABLE_PATH, codepoint_classes
from bpe.write_unicode_classes import classes_from_unicode_data, format_table, unicode_16_data

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


def test_codepoint_classes_follow_unicode_16():
    classes = codepoint_classes()
    assert [classes[ord(c)] for c in "aé中\U0001e4d0\U00010d4a"] == [LETTER] * 5  # 15.0, 16.0
    assert [classes[ord(c)] for c in "7²٣\U00010d40"] == [NUMBER] * 4
    assert [classes[ord(c)] for c in " \t\n\u3000\x85\u2028\xa0"] == [SPACE] * 7
    assert [classes[ord(c)] for c in "'!\u0301\x1c👍\u200b\ue000"] == [OTHER] * 7
    # Letters of Unicode 17.0 and 18.0, unassigned in 16.0: no class, whatever `regex` knows.
    assert [classes[ord(c)] for c in "\u0c5c\ua7ce\u209d\u209e\u209f\U0001d6a6"] == [OTHER] * 6


def test_table_file_is_what_its_generator_writes_from_unicode_16():
    try:
        database = unicode_16_data()
    except SystemExit as missing:
        pytest.skip(str(missing))
    assert format_table(classes_from_unicode_data(database)) == \
        TABLE_PATH.read_text(encoding="ascii")


@pytest.mark.parametrize("text, pieces", [("\u209f'll", ["\u209f'", "ll"]),
                                          ("\U0001d6a6'd", ["\U0001d6a6'", "d"])])
def test_code_points_unassigned_in_unicode_16_split_as_other(text, pieces):
    assert split(text) == split_reference(text) == pieces


@pytest.mark.parametrize("text", HARD_CASES)
def test_reference_pattern_is_gpt2_pattern_where_unicode_versions_agree(text):
    # The hard cases hold no code point whose class changed after Unicode 16.0, so the
    # installed regex running GPT-2's pattern as written must split them the same.
    assert split_reference(text) == regex.findall(GPT2_PATTERN, text)


def test_lone_surrogates_become_replacement_characters():
    assert utf8("a\ud800b") == "a\ufffdb".encode()
    assert utf8("\ud83d\ude00") == "😀".encode()  # a surrogate pair joins into one character
    assert split("a\ud800b") == split_reference("a\ufffdb")
