"""Generation: a prompt's continuations, one token per step over the KV cache.

`generate` prefills the prompt once into the first slot of an inference.decoder.Decoder,
copies it into one slot per further sample, then steps all of them together, a token each,
until every sample has stopped or max_new_tokens are out (see numpygpt.inference.decoder for
the cache and the window that slides when the text outgrows the context). `TextStream` turns
the ids into text as they come, never showing half a character.

Shapes: B samples, V vocabulary.
"""
import codecs

import numpy as np

from ..errors import ConfigError
from .decoder import Decoder

DONE = -1  # what `generate` yields for a sample that has stopped


def generate(model, prompt, *, max_new_tokens, sampler, rng, num_samples=1, stop_token=None,
             n_vocab=None, use_cache=True, on_slide=None):
    """Sample `num_samples` continuations of `prompt` together, one token per step.

    prompt: a non-empty sequence of token ids, the same for every sample.
    sampler: picks tokens from logits, e.g. sampling.Sampler; rng: a numpy Generator.
    stop_token: a sample that draws it stops (the token is not yielded).
    n_vocab: sample only ids below it (a tokenizer smaller than the model's vocabulary).
    use_cache=False: the full forward over the window at every step (for comparisons).
    on_slide: called once, the first time the text outgrows the context.
    Returns an iterator of (num_samples,) int64 arrays, one per step: the new token of each
    sample, or DONE for a sample that has stopped. It ends after max_new_tokens steps or when
    every sample has stopped. The arguments are checked here, before the first step.
    """
    if len(prompt) == 0:
        raise ConfigError("the prompt is empty; give at least one token")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    decoder = Decoder(model, num_samples, use_cache=use_cache)
    return _steps(decoder, np.asarray(prompt, dtype=np.int64), max_new_tokens, sampler, rng, stop_token, n_vocab,
                  on_slide)


def _steps(decoder, prompt, max_new_tokens, sampler, rng, stop_token, n_vocab, on_slide):
    """The loop of `generate`: one (B,) array of new tokens per step."""
    if max_new_tokens == 0:
        return
    samples = np.arange(decoder.n_slots)
    logits = np.repeat(decoder.prefill([0], prompt[None]), len(samples), axis=0)  # the prompt's pass
    for slot in samples[1:]:
        decoder.copy(0, slot)
    done = np.zeros(len(samples), dtype=bool)
    for step in range(max_new_tokens):
        if decoder.slides and on_slide is not None:
            on_slide()
            on_slide = None
        tokens = sampler(logits[:, :n_vocab], rng)
        if stop_token is not None:
            done |= tokens == stop_token
        yield np.where(done, DONE, tokens)
        if done.all():
            return
        if step + 1 < max_new_tokens:
            logits = decoder.step(samples, tokens)


class TextStream:
    """Token ids in, complete characters out, for printing text as it is generated.

    One character can be split across tokens (byte-level BPE cuts UTF-8 anywhere), so bytes
    of an unfinished character wait for the next token; bytes that never form a character
    become U+FFFD at `close`.
    decode_bytes: ids -> bytes, e.g. a bpe.Tokenizer's decode_bytes.
    """

    def __init__(self, decode_bytes):
        self.decode_bytes = decode_bytes
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token):
        """The characters that `token` completes ('' while one is still unfinished)."""
        return self.utf8.decode(self.decode_bytes([int(token)]))

    def close(self):
        """Whatever is left unfinished, as U+FFFD."""
        return self.utf8.decode(b"", final=True)
