"""A tokenized dataset: the two splits' token streams, and random windows cut from them."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass
class Dataset:
    """The token ids of the two splits, memory-mapped, and what they were made from.

    documents: how many documents the training stream joins; with more than one, they are
    separated by <|endoftext|> (so a model trained on it has seen that token start a text).
    """
    train: np.ndarray   # (N_train,) uint16 or uint32; or shards.ShardedTokens, sliced alike
    val: np.ndarray     # (N_val,)
    tokenizer_dir: Path
    name: str
    val_bytes: int      # UTF-8 bytes of the validation text, for bits per byte
    documents: int = 1


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
