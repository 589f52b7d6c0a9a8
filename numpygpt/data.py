"""Training data: find the text, pick the tokenizer, tokenize once into memory-mapped token files,
and cut random windows into batches.

    text file(s) --split 90/10 by characters--> train text, val text
                 --tokenize (cached by content hash)--> data/cache/<hash>/{train,val}.bin (uint16)
                 --random windows of block_size + 1 tokens--> (x, y) batches

Downloads (tiny Shakespeare, GPT-2's vocabulary) are checked against SHA-256 and cached under
`data/`. Offline, the text falls back to the reference manual every Python carries
(`pydoc_data`), and GPT-2's vocabulary to a BPE trained on the training text; each fallback is
said in one line.

A corpus too large for memory is tokenized into shards first (numpygpt.shards):
`python -m numpygpt.data prepare INPUT --out DIR`, then `--data DIR` loads them here.
"""
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bpe
from bpe.files import VocabError, find_vocab_files
from bpe.trainer import train as train_bpe


def default_data_dir() -> Path:
    """Where downloads and token caches go: $NUMPYGPT_DATA_DIR, else ./data (the repo's data/
    when run from the checkout, as the quickstart does)."""
    return Path(os.environ.get("NUMPYGPT_DATA_DIR", "data"))


TINY_SHAKESPEARE = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
GPT2_FILES = {
    "encoder.json": ("https://openaipublic.blob.core.windows.net/gpt-2/models/124M/encoder.json",
                     "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": ("https://openaipublic.blob.core.windows.net/gpt-2/models/124M/vocab.bpe",
                  "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}
TRAIN_FRACTION = 0.9
CACHE_VERSION = "1"  # bump when the token file layout or the split changes


class DataError(Exception):
    """Missing, empty, undecodable or too-short data; the message says what to do."""


def say(message: str):
    print(message, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, sha256: str, dest: Path, timeout: float = 20.0) -> Path:
    """Fetch url to dest unless dest already holds the file with this checksum. Raises OSError
    when offline, DataError when the download's checksum is wrong."""
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
        shutil.copyfileobj(response, f)
    if sha256_file(tmp) != sha256:
        tmp.unlink()
        raise DataError(f"download of {url} has the wrong SHA-256; try again later or pass a local path")
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Text


def fallback_text() -> str:
    """The Python reference manual's topics, shipped with every CPython as pydoc_data."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def default_text(data_dir: Path) -> tuple[str, str]:
    """(text, name) of tiny Shakespeare, downloaded once; the fallback text when offline."""
    url, sha = TINY_SHAKESPEARE
    try:
        path = download(url, sha, data_dir / "tinyshakespeare.txt")
    except (OSError, urllib.error.URLError) as e:
        say(f"tiny Shakespeare is not cached and cannot be downloaded ({getattr(e, 'reason', e)}); "
            "training on Python's reference manual (pydoc_data) instead; pass --data PATH for your own text")
        return fallback_text(), "pydoc_data"
    return read_text(path), "tinyshakespeare"


def read_text(path) -> str:
    """A UTF-8 text file, or every .txt file in a folder (sorted, joined by blank lines)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"no .txt files in folder {path}")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"data not found: {path}")
    texts = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{file} is not UTF-8 text (bad byte at offset {e.start})") from None
    text = "\n\n".join(texts)
    if not text.strip():
        raise DataError(f"{path} holds no text")
    return text


def split_text(text: str, train_fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """First 90% of the characters for training, the rest for validation, cut at a line break
    so no line is split between them."""
    cut = int(len(text) * train_fraction)
    newline = text.find("\n", cut)
    if 0 <= newline < len(text) - 1:
        cut = newline + 1
    return text[:cut], text[cut:]


# ---------------------------------------------------------------------------------------------
# Tokenizer


def gpt2_tokenizer_dir(data_dir: Path) -> Path:
    """GPT-2's encoder.json + vocab.bpe, downloaded and checked once. Raises OSError offline."""
    folder = data_dir / "gpt2"
    for name, (url, sha) in GPT2_FILES.items():
        download(url, sha, folder / name)
    return folder


def trained_tokenizer_dir(train_text: str, vocab_size: int, data_dir: Path) -> Path:
    """A byte-level BPE of vocab_size tokens (incl. <|endoftext|>) learnt on the training text,
    cached by the text's hash so a second run reuses it."""
    key = hashlib.sha256(f"bpe-v1:{vocab_size}:".encode() + train_text.encode()).hexdigest()[:16]
    folder = data_dir / "cache" / f"bpe-{vocab_size}-{key}"
    if (folder / "encoder.json").exists() and (folder / "vocab.bpe").exists():
        return folder
    say(f"training a {vocab_size}-token BPE on the training text (once; cached in {folder})")
    tokenizer = train_bpe([train_text], vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save(tmp)
    publish_dir(tmp, folder, "encoder.json")
    return folder


def publish_dir(tmp: Path, folder: Path, marker: str):
    """Rename a finished tmp folder into place. If another process (a sweep's parallel worker)
    published the same cache entry first, theirs is identical: keep it and drop ours."""
    try:
        os.replace(tmp, folder)
    except OSError:
        if not (folder / marker).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_tokenizer(spec: str, train_text: str, vocab_size: int, data_dir: Path) -> Path:
    """spec: "gpt2" (GPT-2's vocabulary), "train" (a BPE of vocab_size learnt on the training
    text), or a folder holding encoder.json + vocab.bpe. Returns that folder."""
    if spec == "train":
        return trained_tokenizer_dir(train_text, vocab_size, data_dir)
    if spec == "gpt2":
        try:
            return gpt2_tokenizer_dir(data_dir)
        except (OSError, urllib.error.URLError) as e:
            say(f"GPT-2's vocabulary is not cached and cannot be downloaded ({getattr(e, 'reason', e)}); "
                f"training a {vocab_size}-token BPE on the training text instead")
            return trained_tokenizer_dir(train_text, vocab_size, data_dir)
    try:
        find_vocab_files(spec)
    except VocabError as e:
        raise DataError(f"{e} (or pass --tokenizer gpt2 / train)") from None
    return Path(spec)


def load_tokenizer(folder):
    """bpe.load with its errors turned into DataError."""
    try:
        return bpe.load(folder)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load tokenizer from {folder}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Token files


@dataclass
class Dataset:
    """Memory-mapped token ids of the two splits, and what they were made from."""
    train: np.ndarray   # (N_train,) uint16 or uint32; or shards.ShardedTokens, sliced alike
    val: np.ndarray     # (N_val,)
    tokenizer_dir: Path
    name: str
    val_bytes: int      # UTF-8 bytes of the validation text, for bits per byte


def _hash_files(*paths) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(Path(p).read_bytes())
    return digest.hexdigest()


def tokenize_splits(text: str, name: str, tokenizer_dir: Path, data_dir: Path) -> Dataset:
    """Tokenize the train/val splits of text once into uint16 (uint32 for vocabularies over
    65536) files under data/cache/, keyed by the hash of the text and the tokenizer files."""
    train_text, val_text = split_text(text)
    digest = hashlib.sha256(CACHE_VERSION.encode() + text.encode())
    digest.update(_hash_files(*find_vocab_files(tokenizer_dir)).encode())
    folder = data_dir / "cache" / f"tokens-{digest.hexdigest()[:16]}"
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        tokenizer = load_tokenizer(tokenizer_dir)
        dtype = np.uint16 if tokenizer.n_vocab <= 1 << 16 else np.uint32
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for split, split_text_ in (("train", train_text), ("val", val_text)):
            np.asarray(tokenizer.encode_ordinary(split_text_), dtype=dtype).tofile(tmp / f"{split}.bin")
        meta = {"dtype": np.dtype(dtype).name, "name": name,
                "val_bytes": len(val_text.encode("utf-8")), "n_vocab": tokenizer.n_vocab}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if not (folder / "meta.json").exists():  # an unfinished folder of an old version
            shutil.rmtree(folder, ignore_errors=True)
        publish_dir(tmp, folder, "meta.json")
    meta = json.loads(meta_path.read_text())
    splits = {s: np.memmap(folder / f"{s}.bin", dtype=meta["dtype"], mode="r")
              if (folder / f"{s}.bin").stat().st_size else np.zeros(0, meta["dtype"])
              for s in ("train", "val")}
    return Dataset(splits["train"], splits["val"], tokenizer_dir, meta["name"], meta["val_bytes"])


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator,
              rows: slice = slice(None)):
    """batch_size random windows of block_size + 1 consecutive tokens: x is each window but
    its last token, y the same shifted by one (the next token at every position).
    rows: which of the batch_size windows to return (a data-parallel rank's share); rng
    advances as for the whole batch, so every rank stays in step with one process.
    Returns x, y: (rows, block_size) int64."""
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)[rows]
    windows = np.stack([tokens[s:s + block_size + 1] for s in starts]).astype(np.int64)
    return windows[:, :-1], windows[:, 1:]


def check_long_enough(dataset: Dataset, block_size: int):
    for split in ("train", "val"):
        n = len(getattr(dataset, split))
        if n < block_size + 1:
            raise DataError(f"the {split} split has {n} tokens, fewer than one window of "
                            f"{block_size + 1}; use more text or a smaller --block-size")


def prepare_dataset(data_path, tokenizer: str, vocab_size: int, data_dir: Path | None = None) -> Dataset:
    """Text (a path, or tiny Shakespeare when None) + tokenizer spec -> tokenized Dataset.
    A shard folder (from `prepare`) is loaded as it is; its tokenizer spec may be None."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    from . import shards  # here, not at the top: shards imports this module
    if shards.is_shard_dir(data_path):
        return shards.load_dataset(data_path, tokenizer, data_dir)
    if data_path is None:
        text, name = default_text(data_dir)
    else:
        text, name = read_text(data_path), Path(data_path).name
    train_text, _ = split_text(text)
    tokenizer_dir = resolve_tokenizer(tokenizer, train_text, vocab_size, data_dir)
    return tokenize_splits(text, name, tokenizer_dir, data_dir)


if __name__ == "__main__":  # python -m numpygpt.data prepare INPUT --out DIR
    # The package's copy of the CLI, not this __main__ one, so DataError is one class throughout.
    from numpygpt.shards import main
    sys.exit(main())
