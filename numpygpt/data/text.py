"""Text that fits in memory, tokenized once into cached token files.

    a file or a folder --documents (numpygpt.data.corpus)--> [doc, doc, ...]
        --split 90/10--> training documents, validation documents
        --tokenize, <|endoftext|> between documents (cached by content hash)-->
        data/cache/tokens-<hash>/{train,val}.bin (uint16)

A folder, a .jsonl file or a text file with literal `<|endoftext|>` separators holds several
documents; they are read and joined exactly as `numpygpt prepare` joins them into shards, so
one corpus gives one token stream on both paths. One document (tiny Shakespeare) is cut at
the line break after 90% of its characters; several are cut at the document boundary nearest
90% of the characters, so no document is split between training and validation.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from bpe.files import find_vocab_files

from ..errors import DataError
from .corpus import Corpus
from .dataset import Dataset
from .tokenizers import load_tokenizer, publish_dir

TRAIN_FRACTION = 0.9
CACHE_VERSION = "2"  # bump when the token file layout or the split changes


def read_documents(path) -> list[str]:
    """The documents under a path (a text or .jsonl file, or a folder of them), in order."""
    documents, parts = [], []
    for segment in Corpus(path).segments():
        if segment.starts_document and parts:
            documents.append("".join(parts))
            parts = []
        parts.append(segment.text)
    if parts:
        documents.append("".join(parts))
    if not documents:
        raise DataError(f"{path} holds no text")
    return documents


def split_text(text: str, train_fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """The first 90% of the characters for training, the rest for validation, cut at a line
    break so no line is split between them."""
    cut = int(len(text) * train_fraction)
    newline = text.find("\n", cut)
    if 0 <= newline < len(text) - 1:
        cut = newline + 1
    return text[:cut], text[cut:]


def split_documents(documents: list[str], train_fraction: float = TRAIN_FRACTION) -> tuple[list, list]:
    """(training documents, validation documents): one document is cut in two by
    split_text; several are cut between documents, at the boundary nearest train_fraction of
    the characters (at least one document on each side)."""
    if len(documents) == 1:
        train, val = split_text(documents[0], train_fraction)
        return [train], [val]
    ends = np.cumsum([len(d) for d in documents])
    k = int(np.argmin(np.abs(ends[:-1] - train_fraction * ends[-1]))) + 1
    return documents[:k], documents[k:]


def encode_documents(tokenizer, documents: list[str], dtype) -> np.ndarray:
    """The documents' ids as one stream, <|endoftext|> between them (as prepare writes)."""
    if len(documents) > 1 and tokenizer.eot_token is None:
        raise DataError("the tokenizer has no <|endoftext|> token to put between the documents; "
                        "use --tokenizer train or gpt2")
    stream = []
    for i, ids in enumerate(tokenizer.encode_batch(documents, disallowed_special=())):
        if i:
            stream.append(tokenizer.eot_token)
        stream.extend(ids)
    return np.asarray(stream, dtype=dtype)


def tokenize_splits(documents: list[str], name: str, tokenizer_dir: Path, home: Path) -> Dataset:
    """Tokenize the two splits of `documents` once into uint16 (uint32 for vocabularies over
    65,536) files under home/cache/, keyed by the hash of the text and the tokenizer files."""
    digest = hashlib.sha256(CACHE_VERSION.encode())
    for document in documents:
        digest.update(len(document).to_bytes(8, "little") + document.encode())
    for path in find_vocab_files(tokenizer_dir):
        digest.update(path.read_bytes())
    folder = home / "cache" / f"tokens-{digest.hexdigest()[:16]}"
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        tokenizer = load_tokenizer(tokenizer_dir)
        dtype = np.uint16 if tokenizer.n_vocab <= 1 << 16 else np.uint32
        train_documents, val_documents = split_documents(documents)
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for split, split_documents_ in (("train", train_documents), ("val", val_documents)):
            encode_documents(tokenizer, split_documents_, dtype).tofile(tmp / f"{split}.bin")
        meta = {"dtype": np.dtype(dtype).name, "name": name, "n_vocab": tokenizer.n_vocab,
                "val_bytes": sum(len(d.encode("utf-8")) for d in val_documents),
                "documents": len(train_documents)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if not meta_path.exists():  # an unfinished folder of an old version
            shutil.rmtree(folder, ignore_errors=True)
        publish_dir(tmp, folder, "meta.json")
    meta = json.loads(meta_path.read_text())
    splits = {s: np.memmap(folder / f"{s}.bin", dtype=meta["dtype"], mode="r")
              if (folder / f"{s}.bin").stat().st_size else np.zeros(0, meta["dtype"])
              for s in ("train", "val")}
    return Dataset(splits["train"], splits["val"], tokenizer_dir, meta["name"], meta["val_bytes"],
                   meta["documents"])
