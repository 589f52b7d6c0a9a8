"""How well a model predicts a text: the log-probability of every token, over windows that
slide across a text of any length.

A model sees at most block_size tokens, so a long text is scored in windows of that length,
`stride` tokens apart. Each token is scored exactly once, in the first window that holds it
as a prediction target (token j is predicted from tokens ..j-1 of its window); with stride =
block_size the windows are disjoint, and with a smaller stride every token after the first
window is predicted from at least block_size - stride tokens before it, which gives a better
estimate of the model's loss for a little more work (Hugging Face's perplexity recipe). The
first token of the text has nothing to be predicted from and is not scored.

    scores = score_tokens(model, ids, stride=64)
    scores.nats_per_token, scores.perplexity, scores.bits_per_byte(utf8_bytes)

Shapes: N tokens, B windows in a batch, T window length, V vocabulary.
"""
import math
from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..errors import ConfigError


@dataclass
class Scores:
    """token_nats: (N,) float64, -log p(token j | the tokens before it in its window); the first
    token's is NaN (not scored). With top = k: top_ids, top_nats (N, k), the k most likely
    tokens at each position and their -log p, most likely first (the first row: -1 and NaN)."""
    token_nats: np.ndarray
    top_ids: np.ndarray | None = None
    top_nats: np.ndarray | None = None

    @property
    def tokens(self) -> int:
        return max(len(self.token_nats) - 1, 0)

    @property
    def total_nats(self) -> float:
        return float(np.sum(self.token_nats[1:]))

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nats_per_token, 700))

    def bits_per_byte(self, utf8_bytes: int) -> float:
        """The text's total loss in bits over its UTF-8 bytes: a figure that does not depend on
        the tokenizer, so models with different vocabularies compare fairly."""
        return self.total_nats / max(utf8_bytes, 1) / math.log(2)


def windows(n_tokens: int, block_size: int, stride: int):
    """(begin, length, first) of each window: inputs ids[begin:begin+length], targets one
    later; it scores the targets from index `first` of the window on."""
    if not 1 <= stride <= block_size:
        raise ConfigError(f"--stride must be in 1..{block_size} (the model's context), got {stride}")
    scored = 0  # targets 1..scored are done
    begin = 0
    while scored < n_tokens - 1:
        length = min(block_size, n_tokens - 1 - begin)
        yield begin, length, scored - begin  # the first new target is token scored + 1
        scored = begin + length
        begin += stride


def score_tokens(model, ids, *, stride: int | None = None, batch_size: int = 8, top: int = 0,
                 on_progress=None) -> Scores:
    """Scores of the token ids (N,) under `model` (evaluation mode), windows of the model's
    context `stride` apart (default: half the context); with the `top` most likely tokens at
    each position too. on_progress(done, total): told the tokens scored so far after each
    batch."""
    ids = np.asarray(ids, dtype=np.int64)
    block = model.config.block_size
    stride = stride or max(1, block // 2)
    token_nats = np.full(len(ids), np.nan)
    top = min(top, model.config.vocab_size)
    top_ids, top_nats = np.full((len(ids), top), -1), np.full((len(ids), top), np.nan)
    plan = list(windows(len(ids), block, stride))
    done = 0
    # Windows of one length go through the model together; only the last can be shorter.
    for length in sorted({w[1] for w in plan}, reverse=True):
        same = [w for w in plan if w[1] == length]
        for start in range(0, len(same), batch_size):
            batch = same[start:start + batch_size]
            x = np.stack([ids[b:b + length] for b, _, _ in batch])
            targets = np.stack([ids[b + 1:b + 1 + length] for b, _, _ in batch])
            for row, (_, _, first) in enumerate(batch):
                targets[row, :first] = -1  # scored by an earlier window
            logits = model.forward(x)
            nats = target_nats(logits, targets)  # logits are the probabilities from here
            for row, (b, _, first) in enumerate(batch):
                token_nats[b + 1 + first:b + 1 + length] = nats[row, first:]
                if top:
                    probs = logits[row, first:]
                    best = np.argpartition(-probs, top - 1, axis=-1)[:, :top]
                    best = np.take_along_axis(best, np.argsort(-np.take_along_axis(probs, best, axis=-1), axis=-1),
                                              axis=-1)
                    top_ids[b + 1 + first:b + 1 + length] = best
                    top_nats[b + 1 + first:b + 1 + length] = -np.log(np.take_along_axis(probs, best, axis=-1))
            done += sum(length - first for _, _, first in batch)
            if on_progress is not None:
                on_progress(done, len(ids) - 1)
    return Scores(token_nats, top_ids if top else None, top_nats if top else None)


def target_nats(logits, targets) -> np.ndarray:
    """logits (B, T, V), overwritten; targets (B, T), -1 = skip -> (B, T) float64 of
    -log softmax(logits)[target] (0 where skipped), by the same fused kernel as the loss."""
    b, t, v = logits.shape
    nats = np.empty(b * t, dtype=np.float64)
    kernels.cross_entropy_forward(logits.reshape(b * t, v), np.ascontiguousarray(targets.reshape(-1)), -1, nats)
    return nats.reshape(b, t)
