"""Training data: from text (or token shards) to batches of windows.

    sources.py     the files numpygpt ships (tiny Shakespeare, GPT-2's vocabulary), downloads, the cache
    tokenizers.py  which tokenizer: GPT-2's, a BPE learnt on the training text, or a folder
    corpus.py      a corpus of any size as a resumable stream of documents
    text.py        text that fits in memory -> cached token files of the two splits
    shards.py      a corpus larger than memory -> token shards (`numpygpt prepare`), read memory-mapped
    dataset.py     the Dataset both give, and the random windows a batch is cut from
"""
from pathlib import Path

from . import shards
from .dataset import Dataset, check_long_enough, get_batch
from .sources import data_home, project_file
from .text import read_documents, split_documents, tokenize_splits
from .tokenizers import load_tokenizer, resolve_tokenizer

__all__ = ["Dataset", "check_long_enough", "get_batch", "load_dataset", "load_tokenizer"]


def load_dataset(data_path, tokenizer: str | None, vocab_size: int, home: Path | None = None, say=None) -> Dataset:
    """The tokenized Dataset of `data_path`: a text file or folder (tiny Shakespeare when None),
    tokenized with `tokenizer` ("train", "gpt2" or a folder; a BPE of vocab_size when "train"),
    or a shard folder from `numpygpt prepare` (tokenizer None for the shards' own).
    say(message): told about slow one-off work (learning a BPE)."""
    home = Path(home) if home is not None else data_home()
    if shards.is_shard_dir(data_path):
        return shards.load_shards(data_path, tokenizer, home)
    path = project_file("tinyshakespeare.txt", home) if data_path is None else Path(data_path)
    documents = read_documents(path)
    tokenizer_dir = resolve_tokenizer(tokenizer, split_documents(documents)[0], vocab_size, home, say)
    return tokenize_splits(documents, path.name, tokenizer_dir, home)
