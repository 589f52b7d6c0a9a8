"""`numpygpt tokenizer train|encode|decode`: a round trip through real processes, and every
kind of bad input giving one line on stderr and a non-zero status, never a traceback."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numpygpt.commands import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, stdin=b""):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "numpygpt", "tokenizer", *map(str, args)], input=stdin,
                          capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def small_vocab(data_dir, tmp_path_factory):
    """A 400-token vocabulary trained on the-verdict.txt by the CLI."""
    folder = tmp_path_factory.mktemp("verdict-400")
    result = run_cli("train", data_dir / "the-verdict.txt", "--vocab-size", 400, "--out", folder)
    assert result.returncode == 0, result.stderr
    assert b"wrote 400 tokens" in result.stderr
    return folder


def test_train_encode_decode_round_trip(small_vocab, data_dir):
    text = (data_dir / "the-verdict.txt").read_bytes() + "<|endoftext|> é中👍".encode()
    encoded = run_cli("encode", "--vocab", small_vocab, stdin=text)
    assert encoded.returncode == 0, encoded.stderr
    ids = [int(i) for i in encoded.stdout.split()]
    assert 399 in ids  # <|endoftext|> is the last id
    decoded = run_cli("decode", "--vocab", small_vocab, stdin=encoded.stdout)
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout == text


def assert_one_error_line(stderr, message):
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert "Traceback" not in stderr.decode()


def test_an_error_in_a_real_process():
    result = run_cli("encode", "--vocab", "missing-folder", stdin=b"hi")
    assert result.returncode == 2
    assert result.stdout == b""
    assert_one_error_line(result.stderr, "missing-folder does not exist")


def run_main(monkeypatch, capsysbinary, args, stdin=b""):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["tokenizer", *[str(a) for a in args]]))
    return exit_info.value.code, capsysbinary.readouterr()


def test_encode_gives_gpt2_ids(gpt2_dir, monkeypatch, capsysbinary):
    status, captured = run_main(monkeypatch, capsysbinary, ["encode", "--vocab", gpt2_dir],
                                b"Hello world<|endoftext|>")
    assert (status, captured.out) == (0, b"15496 995 50256\n")


@pytest.mark.parametrize("case", ["missing file", "too small", "not utf-8 file", "bad id",
                                  "id out of range", "not utf-8 stdin", "corrupt vocab",
                                  "no vocab files", "bad flag", "a folder as text", "empty text",
                                  "special and no special", "out holds a vocabulary", "out is a file",
                                  "out not writable"])
def test_bad_input_gives_one_clear_line(case, small_vocab, tmp_path, monkeypatch,
                                        capsysbinary):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "encoder.json").write_text("{oops")
    (corrupt / "vocab.bpe").write_text("#version: 0.2\n")
    out = tmp_path / "out"
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "a-file").write_text("mine")
    verdict = Path(__file__).resolve().parents[1] / "data" / "the-verdict.txt"
    vocab_before = {f.name: f.read_bytes() for f in small_vocab.iterdir()}
    args, stdin, message = {
        "missing file": (["train", tmp_path / "nope.txt", "--vocab-size", 300, "--out", out],
                         b"", "nope.txt: no such file"),
        "too small": (["train", latin1, "--vocab-size", 100, "--out", out], b"",
                      "argument --vocab-size: must be an integer 257 or more, got 100"),
        "not utf-8 file": (["train", latin1, "--vocab-size", 300, "--out", out], b"",
                           "latin1.txt is not UTF-8 text"),
        "bad id": (["decode", "--vocab", small_vocab], b"1 2 3.5", "'3.5'; expected token ids"),
        "id out of range": (["decode", "--vocab", small_vocab], b"1 400", "token id 400 is out"),
        "not utf-8 stdin": (["encode", "--vocab", small_vocab], b"ok \xff", "stdin is not UTF-8"),
        "corrupt vocab": (["encode", "--vocab", corrupt], b"hi", "encoder.json is not valid JSON"),
        "no vocab files": (["encode", "--vocab", tmp_path], b"hi", "holds neither encoder.json"),
        "bad flag": (["train", latin1, "--vocab-size", "many", "--out", out], b"",
                     "argument --vocab-size: expected an integer, got 'many'"),
        "a folder as text": (["train", tmp_path, "--vocab-size", 300, "--out", out], b"",
                             "is a folder; give the text files in it"),
        "empty text": (["train", tmp_path / "empty.txt", "--vocab-size", 300, "--out", out], b"",
                       "the text is empty"),
        "special and no special": (["train", verdict, "--vocab-size", 300, "--out", out, "--special", "x",
                                    "--no-special"], b"", "--special and --no-special contradict"),
        "out holds a vocabulary": (["train", verdict, "--vocab-size", 300, "--out", small_vocab], b"",
                                   "already holds a vocabulary (encoder.json)"),
        "out is a file": (["train", verdict, "--vocab-size", 300, "--out", tmp_path / "a-file"], b"",
                          "a-file is a file, not a folder"),
        "out not writable": (["train", verdict, "--vocab-size", 300, "--out", "/proc/vocab"], b"",
                             "cannot write to --out /proc/vocab"),
    }[case]
    status, captured = run_main(monkeypatch, capsysbinary, args, stdin)
    assert status != 0
    assert captured.out == b""
    assert_one_error_line(captured.err, message)
    assert {f.name: f.read_bytes() for f in small_vocab.iterdir()} == vocab_before
    assert (tmp_path / "a-file").read_text() == "mine"


def test_python_m_bpe_says_where_the_commands_are():
    result = subprocess.run([sys.executable, "-m", "bpe", "train"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1 and "numpygpt tokenizer train|encode|decode" in result.stderr
