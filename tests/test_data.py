"""Training data: the shipped files, splits, windows, the token cache, documents."""
import hashlib
import math

import bpe
import numpy as np
import pytest

from numpygpt import data
from numpygpt.data import sources, text
from numpygpt.errors import DataError
from numpygpt.training.trainer import bits_per_byte


def test_the_shipped_files_are_byte_identical_to_their_sources(data_dir):
    """data/SHA256SUMS, and the checksums numpygpt checks before it uses a file, agree."""
    sums = dict(reversed(line.split()) for line in (data_dir / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(sources.PROJECT_FILES)
    for name, (_, sha256) in sources.PROJECT_FILES.items():
        assert sums[name] == sha256 == hashlib.sha256((data_dir / name).read_bytes()).hexdigest(), name
    assert (data_dir / "tinyshakespeare.txt").stat().st_size == 1_115_394
    assert (data_dir / "the-verdict.txt").stat().st_size == 20_479


def test_the_shipped_files_are_found_with_no_network(tmp_path, monkeypatch):
    """Tiny Shakespeare and GPT-2's vocabulary come from data/, whatever the data home is."""
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    assert sources.project_file("tinyshakespeare.txt", tmp_path) == sources.REPOSITORY_DATA / "tinyshakespeare.txt"
    folder = data.tokenizers.gpt2_tokenizer_dir(tmp_path)
    assert bpe.load(folder).encode("Hello world") == [15496, 995]
    assert not any(tmp_path.iterdir())  # nothing downloaded, nothing written


def test_a_file_missing_everywhere_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "REPOSITORY_DATA", tmp_path / "nowhere")
    monkeypatch.setattr(sources, "INSTALLED_DATA", tmp_path / "nowhere")
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataError, match="the-verdict.txt is missing .* cannot be downloaded"):
        sources.project_file("the-verdict.txt", tmp_path)


def test_a_download_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    import io
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the file"))
    with pytest.raises(DataError, match="wrong SHA-256"):
        sources.download("https://example.invalid/x", "0" * 64, tmp_path / "x.txt")
    assert list(tmp_path.iterdir()) == []


def test_split_is_ninety_ten_at_a_line_break():
    lines = "".join(f"line {i}\n" for i in range(100))
    train, val = text.split_text(lines)
    assert train + val == lines
    assert train.endswith("\n") and 0.88 < len(train) / len(lines) < 0.92


def test_documents_split_between_documents_nearest_ninety_percent():
    documents = ["a" * 50, "b" * 30, "c" * 15, "d" * 5]
    assert text.split_documents(documents) == (documents[:3], documents[3:])
    assert text.split_documents(["x" * 99, "y"]) == (["x" * 99], ["y"])  # at least one on each side
    assert text.split_documents(["x", "y" * 99]) == (["x"], ["y" * 99])


def test_batches_are_windows_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = data.get_batch(tokens, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)  # consecutive ids: the target is the next token
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)


def test_tokens_are_cached_by_content(tmp_path, data_dir, gpt2_dir):
    text_file = data_dir / "the-verdict.txt"
    first = data.load_dataset(text_file, str(gpt2_dir), 0, home=tmp_path)
    cached = list((tmp_path / "cache").glob("tokens-*/train.bin"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    second = data.load_dataset(text_file, str(gpt2_dir), 0, home=tmp_path)
    assert cached[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.train, second.train)
    assert first.train.dtype == np.uint16 and len(first.train) > 10 * len(first.val) // 2
    # the split's tokens are exactly the tokenizer's encoding of the split's text
    train_text, val_text = text.split_text(text_file.read_text())
    assert list(first.val) == bpe.load(gpt2_dir).encode_ordinary(val_text)
    assert first.documents == 1


def test_a_folder_is_one_stream_of_documents_with_endoftext_between(tmp_path, gpt2_dir):
    """Each file is a document (and so is each part of a file cut by a literal <|endoftext|>);
    the stream is their ids with <|endoftext|> between them, as `numpygpt prepare` writes."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs = [f"Document {i}: " + "word " * (40 + 17 * i) for i in range(9)]
    (folder / "a.txt").write_text(docs[0])
    (folder / "b.txt").write_text("<|endoftext|>".join(docs[1:8]))
    (folder / "c.txt").write_text(docs[8])
    (folder / "notes.md").write_text("not a document")
    dataset = data.load_dataset(folder, str(gpt2_dir), 0, home=tmp_path)
    tok = bpe.load(gpt2_dir)
    train_docs, val_docs = text.split_documents(docs)
    assert dataset.documents == len(train_docs) == 8
    eot = [tok.eot_token]
    expected = [i for k, d in enumerate(train_docs) for i in (eot if k else []) + tok.encode_ordinary(d)]
    assert list(dataset.train) == expected
    assert list(dataset.val) == tok.encode_ordinary(val_docs[0])
    assert dataset.val_bytes == len(val_docs[0].encode())


def test_a_text_folder_gives_the_tokens_prepare_gives(tmp_path, gpt2_dir):
    """One corpus, one token stream: the in-memory path's two splits, joined by <|endoftext|>,
    are the shards' training stream when prepare sends every document to training."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.txt").write_text(f"Text number {i}. " * (30 + 11 * i) + "\n\nThe end é中.\n")
    dataset = data.load_dataset(folder, str(gpt2_dir), 0, home=tmp_path)
    data.shards.prepare(folder, tmp_path / "shards", gpt2_dir, data.shards.ShardSettings(val_fraction=0.0),
                        progress=False)
    shards = data.shards.load_shards(tmp_path / "shards")
    eot = bpe.load(gpt2_dir).eot_token
    assert list(shards.train[:len(shards.train)]) == [*dataset.train, eot, *dataset.val]


def test_bits_per_byte_by_hand():
    """1,000 tokens at ln(4) nats each is 2,000 bits; over 500 bytes that is 4 bits per byte."""
    assert bits_per_byte(math.log(4), 1000, 500) == pytest.approx(4.0)
