"""GPT: token + position embeddings -> pre-LN blocks -> final LayerNorm -> LM head."""
import numpy as np

from .config import GPTConfig
from .layers import Block, Dropout, Embedding, LayerNorm, LMHead
from .loss import SoftmaxCrossEntropy
from .params import Parameters


def parameter_shapes(config: GPTConfig) -> dict:
    """{GPT-2 name: shape}, in the order of the flat buffer: each layer's own shapes, composed.
    Linear weights are (in, out)."""
    c, v = config.n_embd, config.vocab_size
    shapes = {**Embedding.shapes("wte", v, c), **Embedding.shapes("wpe", config.block_size, c)}
    for i in range(config.n_layer):
        shapes |= Block.shapes(f"h.{i}", config)
    shapes |= LayerNorm.shapes("ln_f", c)
    if not config.tie_weights:
        shapes |= Embedding.shapes("lm_head", v, c)  # an untied head is a second (V, C) matrix
    return shapes


INIT_CHUNK = 1 << 20


def init_gpt2(params: Parameters, config: GPTConfig, rng: np.random.Generator):
    """GPT-2's initialisation: weights N(0, 0.02), the residual projections (attn.c_proj,
    mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)) so the residual stream's variance does not grow
    with depth, zero biases, unit LayerNorm gains."""
    for name, shape in params.shapes.items():
        view = params[name]
        if name.endswith(".bias"):
            view[...] = 0.0
        elif ".ln_" in name or name.startswith("ln_f"):
            view[...] = 1.0
        else:
            std = 0.02
            if name.endswith("c_proj.weight"):
                std /= np.sqrt(2 * config.n_layer)
            # Drawn in float64 chunks: the same values as one draw, without a float64 copy
            # of the whole matrix (309 MB for GPT-2's embedding) in the peak memory.
            flat = view.reshape(-1)
            for start in range(0, flat.size, INIT_CHUNK):
                chunk = flat[start:start + INIT_CHUNK]
                chunk[...] = rng.normal(0.0, std, size=chunk.size)


def is_decayed(name: str, shape: tuple) -> bool:
    """AdamW's weight decay applies to matrices and embeddings, not biases or LayerNorm gains."""
    return len(shape) >= 2


class GPT:
    """A GPT-2 language model whose forward and backward passes are written by hand.

    model.forward(ids) -> logits                     inference
    model.loss(ids, targets, rng) -> float          keeps what backward needs
    model.backward()                                 += dL/dparams into model.params.grads
    Dropout is on when `rng` (a numpy Generator) is given, off when it is None.
    """

    def __init__(self, config: GPTConfig, seed: int = 0, init: bool = True, shared_data=None):
        """init=False: leave the parameters zero, for weights that are loaded next (their
        memory is then only taken as it is written). shared_data: see `replica`."""
        self.config = config
        self.params = Parameters(parameter_shapes(config), dtype=config.dtype, shared_data=shared_data)
        if init and shared_data is None:
            init_gpt2(self.params, config, np.random.default_rng(seed))
        self.wte = Embedding(self.params, "wte")
        self.wpe = Embedding(self.params, "wpe")
        self.drop = Dropout(config.dropout)
        self.blocks = [Block(self.params, f"h.{i}", config) for i in range(config.n_layer)]
        self.ln_f = LayerNorm(self.params, "ln_f")
        self.lm_head = LMHead(self.params, "wte.weight" if config.tie_weights else "lm_head.weight")
        self.criterion = SoftmaxCrossEntropy(ignore_index=-1)
        self._logits_buffer = None

    def forward(self, ids, rng=None, out=None):
        """ids: (B, T) integers -> logits (B, T, V), written into `out` when given."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, time), got shape {ids.shape}")
        t = ids.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than the context ({self.config.block_size})")
        x = self.wte.forward(ids) + self.wpe.forward(np.arange(t))
        x = self.drop.forward(x, rng, inplace=True)
        for block in self.blocks:
            x = block.forward(x, rng)
        return self.lm_head.forward(self.ln_f.forward(x), out=out)

    def forward_cached(self, ids, k_cache, v_cache, rows, starts):
        """Logits (B, V) after the last of the new tokens `ids` (B, T) of B sequences whose
        earlier tokens' keys and values are cached (evaluation mode, no dropout): equal to
        forward(all of each sequence's tokens)[:, -1].

        k_cache, v_cache: (n_layer, S, H, block_size, D), the keys and values of S sequences;
        rows: (B,) which sequences the rows of ids continue; starts: (B,) how many tokens each
        holds already. The new tokens' keys and values are written into the cache. Only the
        last position goes through the LM head: it is the only row of logits a step needs."""
        ids, rows, starts = np.asarray(ids), np.asarray(rows), np.asarray(starts)
        end = int(starts.max()) + ids.shape[1]
        if end > self.config.block_size:
            raise ValueError(f"{end} tokens do not fit the context ({self.config.block_size})")
        x = self.wte.forward(ids) + self.wpe.forward(starts[:, None] + np.arange(ids.shape[1]))
        for block, k, v in zip(self.blocks, k_cache, v_cache):
            x = block.forward(x, cache=(k, v, rows, starts))
        return self.lm_head.forward(self.ln_f.forward(x[:, -1:]))[:, 0]

    def loss(self, ids, targets, rng=None) -> float:
        """Mean cross-entropy of predicting targets (B, T) (-1 = ignore) from ids (B, T).

        The (B, T, V) logits, the largest array of a step, live in one buffer kept from call to
        call: they become the probabilities, then dL/dlogits, and are done with once backward
        has run, so the next step writes them again instead of mapping fresh memory."""
        shape = (*np.shape(ids), self.config.vocab_size)
        if self._logits_buffer is None or self._logits_buffer.shape != shape:
            self._logits_buffer = np.empty(shape, dtype=self.params.dtype)
        logits = self.forward(ids, rng, out=self._logits_buffer)
        return self.criterion.forward(logits.reshape(-1, logits.shape[-1]), np.asarray(targets))

    def backward(self, dloss: float = 1.0):
        """Accumulate dloss * dL/dparams for the last `loss` call. Pass 1/k as dloss to average
        k micro-batches."""
        dx = self.lm_head.backward(self.criterion.backward(dloss).reshape(self._logits_buffer.shape))
        dx = self.ln_f.backward(dx)
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        dx = self.drop.backward(dx)
        self.wte.backward(dx)
        self.wpe.backward(dx.sum(axis=0))  # the same positions serve every sequence in the batch

    def zero_grad(self):
        self.params.zero_grad()

    def replica(self) -> "GPT":
        """A GPT over the same parameter values (not a copy: an optimizer step on this model
        is seen by both) with gradients and activations of its own, so that two threads can
        each run loss and backward on other rows of a batch."""
        return GPT(self.config, init=False, shared_data=self.params.data)

    def num_parameters(self) -> int:
        return self.params.count
