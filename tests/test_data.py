"""Data preparation: splits, windows, the token cache, and the offline fallbacks."""
import numpy as np
import pytest

from numpygpt import data


def test_split_is_ninety_ten_at_a_line_break():
    text = "".join(f"line {i}\n" for i in range(100))
    train, val = data.split_text(text)
    assert train + val == text
    assert train.endswith("\n") and 0.88 < len(train) / len(text) < 0.92


def test_batches_are_windows_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = data.get_batch(tokens, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)  # consecutive ids: the target is the next token
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)


def test_tokens_are_cached_by_content(tmp_path, data_dir, gpt2_dir):
    text_file = data_dir / "the-verdict.txt"
    first = data.prepare_dataset(text_file, str(gpt2_dir), 0, data_dir=tmp_path)
    cached = list((tmp_path / "cache").glob("tokens-*/train.bin"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    second = data.prepare_dataset(text_file, str(gpt2_dir), 0, data_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.train, second.train)
    assert first.train.dtype == np.uint16 and len(first.train) > 10 * len(first.val) // 2
    # the split's tokens are exactly the tokenizer's encoding of the split's text
    import bpe
    train_text, val_text = data.split_text(text_file.read_text())
    assert list(first.val) == bpe.load(gpt2_dir).encode_ordinary(val_text)


def test_offline_falls_back_to_pydoc_data_and_a_trained_vocabulary(tmp_path, monkeypatch, capsys):
    """No network and nothing cached: one line each, then training data and a tokenizer anyway."""
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    text, name = data.default_text(tmp_path)
    assert name == "pydoc_data" and len(text) > 100_000
    folder = data.resolve_tokenizer("gpt2", text[:50_000], 300, tmp_path)
    err = capsys.readouterr().err
    assert "cannot be downloaded" in err and "pydoc_data" in err and "training a 300-token BPE" in err
    assert (folder / "encoder.json").exists()


def test_a_download_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    import io
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the file"))
    with pytest.raises(data.DataError, match="wrong SHA-256"):
        data.download("https://example.invalid/x", "0" * 64, tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_folder_of_text_files(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "notes.md").write_text("ignored")
    assert data.read_text(tmp_path) == "first\n\nsecond"


def test_bits_per_byte_by_hand():
    """1,000 tokens at ln(4) nats each is 2,000 bits; over 500 bytes that is 4 bits per byte."""
    import math
    from numpygpt.trainer import bits_per_byte
    assert bits_per_byte(math.log(4), 1000, 500) == pytest.approx(4.0)
