"""Which tokenizer a run uses: GPT-2's own vocabulary, a BPE learnt on the training text, or
a folder of the user's; loaded with one kind of error.

A learnt BPE is cached by the hash of the text it was learnt on, so the second run of the same
command reuses it.
"""
import hashlib
import os
import shutil
from pathlib import Path

import bpe
from bpe.files import VocabError, find_vocab_files
from bpe.trainer import train as train_bpe

from ..errors import DataError, TokenizerError
from .sources import data_home, project_file

BPE_CACHE_VERSION = "bpe-v1"


def gpt2_tokenizer_dir(home: Path | None = None) -> Path:
    """The folder with GPT-2's encoder.json and vocab.bpe (shipped in data/gpt2/)."""
    encoder, merges = (project_file(f"gpt2/{name}", home) for name in ("encoder.json", "vocab.bpe"))
    if encoder.parent != merges.parent:
        raise DataError(f"GPT-2's encoder.json ({encoder}) and vocab.bpe ({merges}) are in different "
                        "folders; put both in one and pass it as --tokenizer FOLDER")
    return encoder.parent


def trained_tokenizer_dir(train_documents: list[str], vocab_size: int, home: Path, say=None) -> Path:
    """A byte-level BPE of vocab_size tokens (with <|endoftext|>) learnt on the training
    documents, cached by their hash. say(message): told when a new one is learnt."""
    digest = hashlib.sha256(f"{BPE_CACHE_VERSION}:{vocab_size}:".encode())
    for i, document in enumerate(train_documents):
        digest.update((b"\x00" if i else b"") + document.encode())
    folder = home / "cache" / f"bpe-{vocab_size}-{digest.hexdigest()[:16]}"
    if (folder / "encoder.json").exists() and (folder / "vocab.bpe").exists():
        return folder
    if say is not None:
        say(f"learning a {vocab_size}-token BPE on the training text (once; cached in {folder})")
    tokenizer = train_bpe(train_documents, vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
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


def tokenizer_folder(spec: str, home: Path | None = None) -> Path:
    """spec "gpt2" (GPT-2's vocabulary) or a folder holding encoder.json + vocab.bpe (or
    Hugging Face's vocab.json + merges.txt). Returns that folder."""
    if spec == "gpt2":
        return gpt2_tokenizer_dir(home)
    try:
        find_vocab_files(spec)
    except VocabError as e:
        raise TokenizerError(f"{e} (or pass --tokenizer gpt2)") from None
    return Path(spec)


def resolve_tokenizer(spec: str, train_documents: list[str], vocab_size: int, home: Path | None = None,
                      say=None) -> Path:
    """spec "train" (a BPE of vocab_size learnt on the training documents), "gpt2", or a
    folder (see tokenizer_folder). Returns the tokenizer's folder."""
    home = Path(home) if home is not None else data_home()
    if spec == "train":
        return trained_tokenizer_dir(train_documents, vocab_size, home, say)
    return tokenizer_folder(spec, home)


def load_tokenizer(folder) -> bpe.Tokenizer:
    """bpe.load, its errors as TokenizerError."""
    try:
        return bpe.load(folder)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot load the tokenizer in {folder}: {e}") from None
