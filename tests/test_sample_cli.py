"""sample.py as a user runs it, in a subprocess: it writes text from the latest checkpoint,
the same seed gives the same text in a pipe and in a terminal, and every bad input ends with
one error line and a non-zero exit, never a traceback."""
import os
import re
import pty
import subprocess
import sys

import pytest

import bpe
from numpygpt.formats import checkpoint
from numpygpt.config import GPTConfig
from numpygpt.model import GPT
from tests.conftest import REPO_ROOT

BLOCK_SIZE = 16
COLOUR_RESET = "\x1b[0m"


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """A training output directory holding a small random GPT and a byte-level tokenizer
    (256 bytes + <|endoftext|>), so every multi-byte character is split across tokens."""
    tmp = tmp_path_factory.mktemp("sample")
    special = {"<|endoftext|>": 256}
    bpe.Tokenizer([bytes([b]) for b in range(256)] + [b"<|endoftext|>"], [], special).save(
        tmp / "tokenizer")
    config = GPTConfig(vocab_size=257, block_size=BLOCK_SIZE, n_layer=2, n_head=2, n_embd=16)
    checkpoint.save(tmp / "out", GPT(config, seed=0), step=10,
                    tokenizer_files=checkpoint.read_tokenizer_files(tmp / "tokenizer"))
    return tmp / "out"


def sample(*args, stdin=""):
    return subprocess.run([sys.executable, "sample.py", *map(str, args)], cwd=REPO_ROOT,
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_writes_text_from_the_latest_checkpoint(out_dir):
    """`sample.py --top-p 0.9` in the folder above out/ writes samples and exits 0."""
    result = sample("--out-dir", out_dir, "--top-p", "0.9", "--max-new-tokens", "8",
                    "--num-samples", "2")
    assert result.returncode == 0, result.stderr
    # One line says what was loaded: the step, and which of the run's checkpoints it is.
    assert re.fullmatch(r"sample.py: loaded \S+/step-000010 \(step 10, latest\)\n", result.stderr), result.stderr
    assert result.stdout.count("---------------\n") == 1


def test_same_seed_same_text_in_a_pipe_and_in_a_terminal(out_dir):
    """With a terminal as stdout the text is streamed (flushed token by token); for the same
    seed it is the same text as in a pipe."""
    args = ["--out-dir", out_dir, "--prompt", "Once upon a time", "--seed", "3",
            "--max-new-tokens", "12", "--num-samples", "2", "--top-k", "50"]
    piped = sample(*args)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("Once upon a time")

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "sample.py", *map(str, args)], cwd=REPO_ROOT,
                               stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    shown = b""
    while chunk := read_or_eof(leader):
        shown += chunk
    assert process.wait(timeout=120) == 0
    # colorama, where installed, resets the terminal's colours at exit (Numba turns it on).
    shown = shown.decode().removesuffix(COLOUR_RESET).replace("\r\n", "\n")
    assert shown == piped.stdout


def read_or_eof(fd):
    try:
        return os.read(fd, 4096)
    except OSError:  # Linux reports a pty whose other end has closed as EIO
        return b""


def test_prompt_from_stdin_and_from_a_file(out_dir, tmp_path):
    """`--prompt -` reads stdin, `--prompt-file` a file; unusual characters are fine."""
    text = "Zoë says: 🙂 \x00 ☃"
    from_stdin = sample("--out-dir", out_dir, "--prompt", "-", "--seed", "1",
                        "--max-new-tokens", "4", stdin=text)
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(text, encoding="utf-8")
    from_file = sample("--out-dir", out_dir, "--prompt-file", prompt_file, "--seed", "1",
                       "--max-new-tokens", "4")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.startswith(text)
    assert from_file.stdout == from_stdin.stdout


def test_prompt_longer_than_the_context_notes_it_once(out_dir):
    """A prompt of many contexts runs on its end; one note on stderr says the window slides."""
    result = sample("--out-dir", out_dir, "--prompt", "word " * (5 * BLOCK_SIZE),
                    "--max-new-tokens", str(2 * BLOCK_SIZE), "--temperature", "0")
    assert result.returncode == 0, result.stderr
    notes = result.stderr.splitlines()[1:]  # after the line saying what was loaded
    assert len(notes) == 1 and notes[0].startswith("sample.py: note:") and "context" in notes[0]


def test_checkpoint_flag_takes_a_checkpoint_directory(out_dir):
    """--checkpoint accepts out/step-NNNNNN itself, and greedy text does not depend on the seed."""
    greedy = ["--temperature", "0", "--max-new-tokens", "6"]
    by_dir = sample("--checkpoint", out_dir / "step-000010", *greedy, "--seed", "1")
    by_out = sample("--out-dir", out_dir, *greedy, "--seed", "2")
    assert by_dir.returncode == 0, by_dir.stderr
    assert by_dir.stdout == by_out.stdout


@pytest.mark.parametrize("args, stdin, message", [
    (["--top-p", "0"], "", "--top-p"),
    (["--top-p", "1.5"], "", "--top-p"),
    (["--temperature", "-0.5"], "", "--temperature"),
    (["--top-k", "0"], "", "--top-k"),
    (["--max-new-tokens", "-1"], "", "--max-new-tokens"),
    (["--num-samples", "0"], "", "--num-samples"),
    (["--prompt", ""], "", "empty"),
    (["--prompt", "-"], "", "empty"),
    (["--prompt-file", "no-such-prompt.txt"], "", "no-such-prompt.txt"),
])
def test_bad_input_is_one_error_line(out_dir, args, stdin, message):
    """Each bad value ends with `sample.py: error: ...` naming it, on one line, exit non-zero."""
    result = sample("--out-dir", out_dir, *args, stdin=stdin)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith("sample.py: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_no_checkpoint_says_to_train_first(tmp_path):
    """An empty or missing output directory points the user at train.py."""
    result = sample("--out-dir", tmp_path / "nothing-here")
    assert result.returncode != 0
    assert result.stderr.startswith("sample.py: error: ") and result.stderr.count("\n") == 1
    assert "train one first (numpygpt train)" in result.stderr


def test_the_best_checkpoint_is_the_default_and_each_can_be_named(tmp_path):
    """A run that evaluated keeps `best` beside `latest`: sample uses best unless told, and
    says which step and validation loss it loaded."""
    special = {"<|endoftext|>": 256}
    bpe.Tokenizer([bytes([b]) for b in range(256)] + [b"<|endoftext|>"], [], special).save(tmp_path / "tok")
    files = checkpoint.read_tokenizer_files(tmp_path / "tok")
    config = GPTConfig(vocab_size=257, block_size=BLOCK_SIZE, n_layer=1, n_head=1, n_embd=8)
    out = tmp_path / "out"
    evaluation = {"step": 10, "val_loss": 5.25, "val_bpb": 7.5}
    checkpoint.save(out, GPT(config, seed=0), step=10, tokenizer_files=files, tags=["latest", "best"],
                    train_state={"evaluation": evaluation})
    checkpoint.save(out, GPT(config, seed=1), step=20, tokenizer_files=files,
                    train_state={"evaluation": {**evaluation, "step": 20, "val_loss": 6.5}})
    loaded = {}
    for which in (None, "best", "latest", "step-20", "step-10", str(out / "step-000020")):
        flags = [] if which is None else ["--checkpoint", which]
        result = sample("--out-dir", out, *flags, "--max-new-tokens", "2", "--seed", "0")
        assert result.returncode == 0, result.stderr
        loaded[which] = result.stderr.splitlines()[0]
    assert loaded[None] == loaded["best"] == loaded["step-10"]
    assert loaded[None].endswith("step-000010 (step 10, best; validation loss 5.2500, 7.500 bits/byte)")
    assert loaded["latest"] == loaded["step-20"] == loaded[str(out / "step-000020")]
    assert loaded["latest"].endswith("step-000020 (step 20, latest; validation loss 6.5000, 7.500 bits/byte)")
    missing = sample("--out-dir", out, "--checkpoint", "step-30")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "holds no checkpoint of step 30; it holds: step-000010 (best), step-000020 (latest)" in missing.stderr
