"""Generation with a KV cache: one batched pass over the prompt, then one token per step.

Without a cache every new token reruns the whole text through the model: T rows through every
matmul and O(T^2) attention, to get one row of logits. With one, each layer keeps the keys and
values of the tokens it has already seen, in buffers allocated once, (B, H, T_max, D) per layer.
A new token then goes through the matmuls as one row and attends to the cached keys: O(T).

Only attention needs to know about the cache. Everything else is the model's own layers
(Embedding, LayerNorm, Linear, MLP, LMHead), called as they are; the LM head runs on the last
position only, since that is the only row of logits a step needs.

When the text fills the context (block_size tokens), the window slides by re-running the last
`keep` tokens (half the context by default) through one prefill. Shifting the cache instead
would be wrong for GPT-2: the position embedding is added to the residual stream before the
first layer, so every cached key and value was computed for a position the token no longer
holds. Re-prefilling is exact (the logits equal a full forward over the window), and keeping
half the context means the next block_size/2 tokens are cheap steps again, so the cost per
token stays O(T) with the model always seeing between block_size/2 and block_size tokens.

Shapes: B batch (samples), T tokens, C width, H heads, D = C / H, V vocabulary.
"""
import codecs
import math

import numpy as np

DONE = -1  # what `generate` yields for a sample that has stopped


class KVCache:
    """Keys and values of every layer for the tokens seen so far.

    k, v: (n_layer, B, H, block_size, D); positions 0..length-1 are filled.
    """

    def __init__(self, config, batch_size):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.head_size)
        self.k = np.zeros(shape, dtype=config.dtype)
        self.v = np.zeros(shape, dtype=config.dtype)
        self.length = 0


def cached_attention(attn, x, k_cache, v_cache, start):
    """What `attn.forward(x)` gives for tokens at positions start.., against cached keys.

    attn: a layers.CausalSelfAttention (its c_attn and c_proj are used as they are).
    x: (B, T, C), the new tokens after ln_1. k_cache, v_cache: (B, H, block_size, D), filled
    for positions < start; the new tokens' keys and values are written at start..start+T-1.
    Returns (B, T, C).
    """
    b, t, c = x.shape
    h, d = attn.n_head, c // attn.n_head
    end = start + t
    q, k, v = attn.c_attn.forward(x).reshape(b, t, 3, h, d).transpose(2, 0, 3, 1, 4)
    k_cache[:, :, start:end] = k
    v_cache[:, :, start:end] = v
    scores = q @ k_cache[:, :, :end].swapaxes(-1, -2)                    # (B, H, T, end)
    scores *= 1.0 / math.sqrt(d)
    if t > 1:  # new token i sits at position start + i and sees columns up to it
        future = np.arange(end) > start + np.arange(t)[:, None]          # (T, end)
        scores[:, :, future] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    y = scores @ v_cache[:, :, :end]                                     # (B, H, T, D)
    return attn.c_proj.forward(y.transpose(0, 2, 1, 3).reshape(b, t, c))


def forward_with_cache(model, ids, cache):
    """ids: (B, T), the tokens after the cache's `length` -> logits (B, V) after the last one.

    Equals model.forward(all tokens so far)[:, -1] (evaluation mode, no dropout).
    """
    start, t = cache.length, ids.shape[1]
    if start + t > model.config.block_size:
        raise ValueError(f"{start + t} tokens do not fit the context ({model.config.block_size})")
    x = model.wte.forward(ids) + model.wpe.forward(np.arange(start, start + t))
    for block, k_cache, v_cache in zip(model.blocks, cache.k, cache.v):
        x = x + cached_attention(block.attn, block.ln_1.forward(x), k_cache, v_cache, start)
        x = x + block.mlp.forward(block.ln_2.forward(x), None)
    cache.length = start + t
    return model.lm_head.forward(model.ln_f.forward(x[:, -1:]))[:, 0]


class Decoder:
    """B sequences fed to the model a token at a time, with the window slid as they grow.

    decoder.prefill(ids) -> logits     the prompt (B, T), cropped to its last block_size tokens
    decoder.step(tokens) -> logits     append tokens (B,) and give the logits (B, V) after them
    decoder.context                    (B, T) the tokens the model sees now
    decoder.slides                     how often the window has slid (or the prompt was cropped)
    on_slide() is called at the first slide. use_cache=False runs the full forward over the
    window every step, for reference and speed comparisons; both give the same logits.
    """

    def __init__(self, model, batch_size, *, use_cache=True, keep=None, on_slide=None):
        self.model = model
        self.block_size = model.config.block_size
        self.keep = keep or max(1, self.block_size // 2)
        if not 1 <= self.keep <= self.block_size:
            raise ValueError(f"keep must be in 1..{self.block_size}, got {self.keep}")
        self.cache = KVCache(model.config, batch_size) if use_cache else None
        self.ids = np.zeros((batch_size, self.block_size), dtype=np.int64)
        self.length = 0
        self.slides = 0
        self.on_slide = on_slide

    @property
    def context(self):
        return self.ids[:, :self.length]

    def prefill(self, ids):
        """ids: (B, T) integers -> logits (B, V) after the last token."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[1] == 0:
            raise ValueError("nothing to prefill: give at least one token")
        if ids.shape[1] > self.block_size:
            self.note_slide()
            ids = ids[:, -self.block_size:]
        self.length = ids.shape[1]
        self.ids[:, :self.length] = ids
        if self.cache is None:
            return self.model.forward(self.context)[:, -1]
        self.cache.length = 0
        return forward_with_cache(self.model, ids, self.cache)

    def step(self, tokens):
        """tokens: (B,) integers, one per sequence -> logits (B, V) after them."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.length == self.block_size:
            self.note_slide()
            kept = self.context[:, self.length - self.keep + 1:]
            return self.prefill(np.concatenate([kept, tokens[:, None]], axis=1))
        self.ids[:, self.length] = tokens
        self.length += 1
        if self.cache is None:
            return self.model.forward(self.context)[:, -1]
        return forward_with_cache(self.model, tokens[:, None], self.cache)

    def note_slide(self):
        self.slides += 1
        if self.slides == 1 and self.on_slide is not None:
            self.on_slide()


def generate(model, prompt, *, max_new_tokens, sampler, rng, num_samples=1, stop_token=None,
             n_vocab=None, use_cache=True, on_slide=None):
    """Sample `num_samples` continuations of `prompt` together, one token per step.

    prompt: a non-empty sequence of token ids, the same for every sample.
    sampler: picks tokens from logits, e.g. sampling.Sampler; rng: a numpy Generator.
    stop_token: a sample that draws it stops (the token is not yielded).
    n_vocab: sample only ids below it (a tokenizer smaller than the model's vocabulary).
    on_slide: called once, the first time the text outgrows the context.
    Returns an iterator of (num_samples,) int64 arrays, one per step: the new token of each
    sample, or DONE for a sample that has stopped. It ends after max_new_tokens steps or when
    every sample has stopped. The arguments are checked here, before the first step.
    """
    if len(prompt) == 0:
        raise ValueError("the prompt is empty; give at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    decoder = Decoder(model, num_samples, use_cache=use_cache, on_slide=on_slide)
    prompts = np.tile(np.asarray(prompt, dtype=np.int64), (num_samples, 1))
    return _steps(decoder, prompts, max_new_tokens, sampler, rng, stop_token, n_vocab)


def _steps(decoder, prompts, max_new_tokens, sampler, rng, stop_token, n_vocab):
    """The loop of `generate`: prompts (B, T) -> one (B,) array of new tokens per step."""
    if max_new_tokens == 0:
        return
    done = np.zeros(prompts.shape[0], dtype=bool)
    logits = decoder.prefill(prompts)  # the prompt's pass gives the first logits
    for step in range(max_new_tokens):
        tokens = sampler(logits[:, :n_vocab], rng)
        if stop_token is not None:
            done |= tokens == stop_token
        yield np.where(done, DONE, tokens)
        if done.all():
            return
        if step + 1 < max_new_tokens:
            logits = decoder.step(tokens)


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
