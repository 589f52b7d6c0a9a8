"""Token shards: exactly the corpus's tokens, the same bytes however the input is compressed or
the run interrupted, reads across shard boundaries, and one clear line for every bad input."""
import functools
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import bpe
import train
from numpygpt import data
from numpygpt.commands import main as numpygpt
from numpygpt.data import corpus, shards
from numpygpt.errors import DataError
from numpygpt.formats import atomic
from conftest import REPO_ROOT

SEP = "<|endoftext|>"
SMALL = shards.ShardSettings(shard_tokens=5000, val_fraction=0.2, seed=7)


@functools.cache
def load_once(folder: str):
    return data.load_tokenizer(folder)


@pytest.fixture(autouse=True)
def quick(tmp_path, monkeypatch):
    """Downloads and caches in tmp_path; each vocabulary loaded once per session; batches of
    5 KB of text in groups of 1.5 KB, so even a small corpus makes many batches, groups and
    checkpoints."""
    monkeypatch.setenv("NUMPYGPT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(shards, "load_tokenizer", lambda folder: load_once(str(folder)))
    monkeypatch.setattr(shards, "BATCH_CHARS", 5_000)
    monkeypatch.setattr(shards, "GROUP_CHARS", 1_500)


def documents(data_dir) -> list[str]:
    """About 200 KB: 600 paragraphs of Shakespeare, then The Verdict whole."""
    paragraphs = (data_dir / "tinyshakespeare.txt").read_text()[:180_000].split("\n\n")
    return paragraphs[:600] + [(data_dir / "the-verdict.txt").read_text()]


def write_corpus(folder, docs, compression=""):
    """The documents as a.txt (separated by <|endoftext|>, with blank documents to skip),
    b.jsonl (a line each) and c/verdict.txt (one file, one document), all compressed alike."""
    def write(name, text):
        path = folder / (name + compression)
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = text.encode()
        if compression == ".gz":
            raw = gzip.compress(raw)
        elif compression == ".zst":
            raw = pytest.importorskip("zstandard").ZstdCompressor().compress(raw)
        path.write_bytes(raw)
    write("a.txt", SEP.join(docs[:300]) + SEP + " \n" + SEP)
    write("b.jsonl", "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[300:-1])) + "\n")
    write("c/verdict.txt", docs[-1])
    return folder


@pytest.fixture
def corpus_dir(tmp_path, data_dir):
    return write_corpus(tmp_path / "corpus", documents(data_dir))


def prepare(input_dir, out_dir, gpt2_dir, settings=SMALL, workers=2):
    return shards.prepare(input_dir, out_dir, gpt2_dir, settings, workers, progress=False)


def shard_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}


def test_shards_hold_the_corpus_encoded_in_one_go(corpus_dir, data_dir, gpt2_dir, tmp_path):
    """Each split is its documents joined by <|endoftext|>, encoded as one text."""
    manifest = prepare(corpus_dir, tmp_path / "out", gpt2_dir)
    dataset = shards.load_shards(tmp_path / "out")
    docs = documents(data_dir)
    is_val = [shards.in_validation(i, SMALL.seed, SMALL.val_fraction) for i in range(len(docs))]
    assert 0.1 < np.mean(is_val) < 0.3 and manifest["cursor"]["documents"]["val"] == sum(is_val)
    encoder = bpe.load(gpt2_dir)
    for split, tokens in (("train", dataset.train), ("val", dataset.val)):
        text = SEP.join(d for d, v in zip(docs, is_val) if v == (split == "val"))
        assert list(tokens[:]) == encoder.encode(text, allowed_special="all")
    assert dataset.val_bytes == sum(len(d.encode()) for d, v in zip(docs, is_val) if v)
    assert [s["tokens"] for s in manifest["shards"] if s["split"] == "train"][:-1] == [5000] * (len(dataset.train) // 5000)
    assert (tmp_path / "out" / "tokenizer" / "vocab.bpe").read_bytes() == (gpt2_dir / "vocab.bpe").read_bytes()
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize("block, segment", [(7, 40), (64, 1000), (4096, 100)])
def test_long_documents_come_in_segments_with_the_same_tokens(data_dir, gpt2_dir, monkeypatch, block, segment):
    """Cut where words end, a document's segments encode to the document's tokens."""
    monkeypatch.setattr(corpus, "BLOCK_BYTES", block)
    text = (data_dir / "the-verdict.txt").read_text()[:6000]
    pieces = list(corpus.text_pieces(io.BytesIO(text.encode()), 0, segment))
    assert len(pieces) > 3 and all(len(p[1]) <= segment + block + len(SEP) for p in pieces)
    assert [p[2] for p in pieces] == [False] * (len(pieces) - 1) + [True]
    encoder = load_once(str(gpt2_dir))
    encoded = encoder.encode_batch([p[1].decode() for p in pieces], disallowed_special=())
    assert sum(encoded, []) == encoder.encode_ordinary(text)


def test_a_run_without_word_ends_is_cut_between_characters(monkeypatch):
    monkeypatch.setattr(corpus, "SEARCH_BYTES", 50)
    raw = ("é" * 500 + SEP + "x").encode()
    pieces = list(corpus.text_pieces(io.BytesIO(raw), 0, 41))
    assert "".join(p[1].decode() for p in pieces) == "é" * 500 + "x" and pieces[-2][3] == len(raw) - 1


@pytest.mark.parametrize("compression", [".gz", ".zst"])
def test_compressed_and_plain_input_give_identical_shards(data_dir, gpt2_dir, tmp_path, compression):
    docs = documents(data_dir)
    plain = prepare(write_corpus(tmp_path / "plain", docs), tmp_path / "a", gpt2_dir)
    packed = prepare(write_corpus(tmp_path / "packed", docs, compression), tmp_path / "b", gpt2_dir, workers=1)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b") != {}
    assert plain["cursor"]["documents"] == packed["cursor"]["documents"]


class Crash(Exception):
    """An interruption injected at a chosen point."""


def crash_on_call(monkeypatch, owner, name, n, before=None):
    """Make the n-th call of owner.name raise Crash (after calling `before` with its arguments)."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            if before:
                before(real, *args)
            raise Crash
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)


def write_half(real, writer, tokens):
    real(writer, tokens[:len(tokens) // 2])


@pytest.mark.parametrize("owner, name, n, before", [
    (atomic, "write_json", 3, None),                   # before a checkpoint's manifest
    (shards, "publish", 2, None),                      # after the manifest, before the renames
    (shards.SplitWriter, "write", 9, write_half),      # halfway through writing a batch
    (shards.SplitWriter, "write", 25, write_half),
])
def test_an_interrupted_run_resumes_to_identical_shards(corpus_dir, gpt2_dir, tmp_path, monkeypatch,
                                                        owner, name, n, before):
    prepare(corpus_dir, tmp_path / "clean", gpt2_dir)
    with monkeypatch.context() as patch:
        crash_on_call(patch, owner, name, n, before)
        with pytest.raises(Crash):
            prepare(corpus_dir, tmp_path / "resumed", gpt2_dir)
    with pytest.raises(DataError, match="resumed is unfinished .* run numpygpt prepare again"):
        shards.load_shards(tmp_path / "resumed")
    prepare(corpus_dir, tmp_path / "resumed", gpt2_dir)
    assert shard_bytes(tmp_path / "resumed") == shard_bytes(tmp_path / "clean")
    assert not list((tmp_path / "resumed").glob("*.tmp"))


KILLABLE = """
import sys, time
import bpe
from numpygpt.data import shards
shards.BATCH_CHARS = 5_000
shards.GROUP_CHARS = 1_500
encode = bpe.Tokenizer.encode_ordinary_batch_to_numpy
def slow_encode(self, *args, **kwargs):  # so that the kill lands mid-run
    time.sleep(0.05)
    return encode(self, *args, **kwargs)
bpe.Tokenizer.encode_ordinary_batch_to_numpy = slow_encode
from numpygpt.commands import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill(corpus_dir, gpt2_dir, tmp_path):
    """Killed twice at random instants after a shard was written, then run to the end: the
    same shards as a run never interrupted."""
    out = tmp_path / "killed"
    argv = ["prepare", str(corpus_dir), "--out", str(out), "--tokenizer", str(gpt2_dir), "--shard-tokens", "5000",
            "--val-fraction", "0.2", "--seed", "7"]
    rng = np.random.default_rng(0)
    shards_before_kill = 0
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE, *argv], cwd=tmp_path, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
            if len(manifest.get("shards", [])) > shards_before_kill:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.15))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        shards_before_kill = len(json.loads((out / "manifest.json").read_text())["shards"])
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    assert numpygpt(argv) == 0
    prepare(corpus_dir, tmp_path / "clean", gpt2_dir)
    assert shard_bytes(out) == shard_bytes(tmp_path / "clean")


def test_sharded_tokens_read_across_boundaries_like_one_array(tmp_path):
    stream = np.random.default_rng(0).integers(0, 50_000, 23_456).astype("<u2")
    writer = shards.SplitWriter(tmp_path, "train", stream.dtype, 1000, "ab" * 32)
    for chunk in np.array_split(stream, 7):
        writer.write(chunk)
    writer.close()
    finished = writer.take_finished()
    shards.publish(tmp_path, finished)
    tokens = shards.ShardedTokens([tmp_path / s["file"] for s in finished], [s["tokens"] for s in finished],
                                  stream.dtype)
    assert len(tokens) == len(stream) and [s["tokens"] for s in finished][-2:] == [1000, 456]
    for start, stop in [(0, 1), (990, 1010), (999, 3001), (23_000, 23_456), (5, 5), (-10, None)]:
        np.testing.assert_array_equal(tokens[start:stop], stream[start:stop])
    # the same windows, bit for bit, as from the array
    x, y = data.get_batch(tokens, 8, 64, np.random.default_rng(1))
    x_ref, y_ref = data.get_batch(stream, 8, 64, np.random.default_rng(1))
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    parts = [tokens.part(rank, 3) for rank in range(3)]
    np.testing.assert_array_equal(np.concatenate([p[:] for p in parts]), stream)
    assert shards.token_dtype(50257) == np.uint16 and shards.token_dtype(70_000) == np.uint32


def test_train_py_trains_on_shards(corpus_dir, gpt2_dir, tmp_path):
    """With the shards' own vocabulary, or a --tokenizer holding the same one."""
    prepare(corpus_dir, tmp_path / "shards", gpt2_dir)
    argv = ["--model", "tiny", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2", "--sample-tokens",
            "0", "--data", str(tmp_path / "shards"), "--steps", "2", "--eval-interval", "2"]
    assert train.main(argv + ["--out-dir", str(tmp_path / "run")]) == 0
    assert train.main(argv + ["--out-dir", str(tmp_path / "run"), "--resume", "--steps", "3"]) == 0
    assert "val_bpb" in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[1]
    dataset = data.load_dataset(tmp_path / "shards", str(gpt2_dir), 0)
    assert dataset.tokenizer_dir == tmp_path / "shards" / "tokenizer"


def last_line(capsys, prog):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"{prog}: error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_bad_input_gives_one_clear_line(tmp_path, gpt2_dir, monkeypatch, capsys):
    def run(input_path, out="out", *flags):
        return numpygpt(["prepare", str(input_path), "--out", str(tmp_path / out), "--tokenizer",
                            str(gpt2_dir), *flags])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert run(latin1, "a") == 2 and "latin1.txt is not UTF-8 text (bad byte at offset 3)" in last_line(capsys, "numpygpt prepare")
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", "b") == 2 and "no .txt or .jsonl files" in last_line(capsys, "numpygpt prepare")
    (tmp_path / "empty" / "blank.txt.gz").write_bytes(gzip.compress(b" \n" + SEP.encode() + b"\n"))
    assert run(tmp_path / "empty", "b") == 2 and "empty holds no text" in last_line(capsys, "numpygpt prepare")
    assert run(tmp_path / "missing.txt", "c") == 2 and "data not found" in last_line(capsys, "numpygpt prepare")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": 3}\n')
    assert run(bad_json, "d") == 2 and "bad.jsonl: the line at byte 17 has no \"text\"" in last_line(capsys, "numpygpt prepare")
    zst = tmp_path / "x.txt.zst"
    zst.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if not installed
    assert run(zst, "e") == 2 and "pip install 'numpygpt[zstd]'" in last_line(capsys, "numpygpt prepare")
    text = tmp_path / "ok.txt"
    text.write_text("Hello there. " * 100)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes").write_text("mine")
    assert run(text, "full") == 2 and "is not empty and holds no manifest.json" in last_line(capsys, "numpygpt prepare")
    assert run(text, "f", "--shard-tokens", "100") == 0
    # The folders of preparations that failed on their input kept nothing: the input mended,
    # the same command there starts afresh (rather than refusing another preparation's folder).
    assert run(text, "a") == 0 and run(text, "d") == 0
    assert run(text, "/proc/shards") == 2
    assert "cannot write to --out /proc/shards" in last_line(capsys, "numpygpt prepare")
    assert run(text, "f", "--shard-tokens", "200") == 2 and "another preparation (its settings differ)" in \
        last_line(capsys, "numpygpt prepare")
    assert run(text, "f", "--val-fraction", "1") == 2
    assert "argument --val-fraction: must be a number in 0..0.999, got 1" in last_line(capsys, "numpygpt prepare")


def test_a_corpus_of_one_document_is_told_it_has_no_validation_split(tmp_path, gpt2_dir, capsys):
    text = tmp_path / "one.txt"
    text.write_text("Hello there. " * 100)
    assert numpygpt(["prepare", str(text), "--out", str(tmp_path / "out"), "--tokenizer", str(gpt2_dir)]) == 0
    err = capsys.readouterr().err
    assert "no document went to validation, which training needs" in err and "train with" not in err


def test_the_command_line_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "numpygpt", "prepare", str(tmp_path / "missing"), "--out",
                             str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "NUMPYGPT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == f"numpygpt prepare: error: data not found: {tmp_path / 'missing'}"
    moved = subprocess.run([sys.executable, "-m", "numpygpt.data", "prepare"], cwd=REPO_ROOT, capture_output=True,
                           text=True)
    assert moved.returncode == 1 and "numpygpt prepare INPUT --out DIR" in moved.stderr


def test_damaged_shards_and_other_vocabularies_are_refused(corpus_dir, gpt2_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    prepare(corpus_dir, out, gpt2_dir)
    other = tmp_path / "other-bpe"
    bpe.train([(corpus_dir / "c" / "verdict.txt").read_text()], vocab_size=300,
              special_tokens=[SEP]).save(other)
    argv = ["--model", "tiny", "--data", str(out), "--steps", "1", "--out-dir", str(tmp_path / "run")]
    assert train.main(argv + ["--tokenizer", str(other)]) == 2
    assert f"tokenizer {other} does not match the vocabulary the shards in {out}" in last_line(capsys, "train.py")
    shard = out / "train_000002.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert train.main(argv) == 2
    assert f"{shard} has 10,054 bytes, not the 10,064 its header says" in last_line(capsys, "train.py")
    shard.write_bytes(b"not a shard" * 10)
    with pytest.raises(DataError, match="train_000002.bin is not a version-1 numpygpt shard"):
        shards.load_shards(out)
