"""GPTConfig and the named presets."""
import numbers
from dataclasses import asdict, dataclass, fields, replace

from .errors import ConfigError


SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")


@dataclass(frozen=True)
class GPTConfig:
    """Everything that fixes the shapes and behaviour of a GPT.

    vocab_size: tokens in the vocabulary (GPT-2: 50257).
    block_size: the longest context the position embedding covers.
    n_layer, n_head, n_embd: depth, heads per attention, width (n_embd % n_head == 0).
    dropout: on embeddings, attention weights and residual branches while training.
    bias: biases in every Linear and LayerNorm (GPT-2 has them).
    qkv_bias: the attention's fused q/k/v projection has a bias (the seed's variant drops it).
    tie_weights: the LM head reuses the token embedding matrix (GPT-2 does).
    dtype: "float32" for training, "float64" for gradient checks.
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    qkv_bias: bool = True
    tie_weights: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        # Types first: a config read from JSON (a checkpoint's, edited by hand) may hold anything.
        for name in SHAPE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real):
            raise ConfigError(f"dropout must be a number, got {self.dropout!r}")
        for name in ("bias", "qkv_bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in SHAPE_FIELDS:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a JSON object of fields, not a {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
        missing = [name for name in SHAPE_FIELDS if name not in d]  # the others have defaults of old
        if missing:
            raise ConfigError(f"the config has no {', '.join(missing)}")
        return cls(**d)

    def with_(self, **changes) -> "GPTConfig":
        """A copy with some fields changed (None values are ignored, so CLI flags pass through)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS = {
    # OpenAI's GPT-2 family (context 1024, vocabulary 50257).
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
    # The seed configuration: GPT-2 small at context 256, dropout 0.1, no qkv bias.
    "seed": GPTConfig(block_size=256, n_layer=12, n_head=12, n_embd=768, dropout=0.1, qkv_bias=False),
    # CPU-friendly models. Their vocabulary is set by the tokenizer they train with
    # (a few thousand BPE tokens learnt on the training text, by default).
    "shakespeare": GPTConfig(vocab_size=4096, block_size=128, n_layer=4, n_head=4, n_embd=192, dropout=0.1),
    "small": GPTConfig(vocab_size=4096, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.1),
    "tiny": GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0),
}


def preset(name: str) -> GPTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
