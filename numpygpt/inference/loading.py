"""A model and its tokenizer, ready to generate or to be scored: what `sample`, `serve`,
`eval` and `export` load.

From a training output directory (its best checkpoint when the run evaluated, else its
latest; or the one --checkpoint names), a checkpoint folder, or a Hugging Face GPT-2 folder or
cached model name (--init-from). Our checkpoints carry their tokenizer in tokenizer/; a
tokenizer folder given with --tokenizer wins over it.
"""
import re
from dataclasses import dataclass
from pathlib import Path

import bpe

from ..data.tokenizers import load_tokenizer
from ..errors import ConfigError, TokenizerError
from ..formats import checkpoint, hf
from ..model import GPT
from .quantize import quantize_model

CHECKPOINT_NAMES = re.compile(r"best|latest|step-?\d+")


def add_model_arguments(parser, verb: str):
    """The flags that say which model and tokenizer to load (`verb`: "sampled", "served", ...)."""
    parser.add_argument("--out-dir", default="out", metavar="DIR",
                        help=f"the training output directory whose checkpoint is {verb}")
    parser.add_argument("--checkpoint", metavar="WHICH",
                        help="best, latest, step-N, or the path of a checkpoint folder "
                             "(default: best when the run evaluated, else latest)")
    parser.add_argument("--init-from", metavar="HF",
                        help="instead: a Hugging Face GPT-2 folder, or a model name (gpt2, gpt2-medium, ...) "
                             "found in the local Hugging Face cache")
    parser.add_argument("--tokenizer", type=Path, metavar="DIR",
                        help="a folder with encoder.json + vocab.bpe (default: the model's own)")
    parser.add_argument("--quantize", choices=["int8"],
                        help="keep the weight matrices as int8: a quarter of the memory, and faster decoding "
                             "(numpygpt.inference.quantize)")


@dataclass
class LoadedModel:
    """A model with its tokenizer.

    name: the model's own name (its output directory's or folder's); description: what was
    loaded, for the line each command prints; trained_on_eot: the model has seen
    <|endoftext|> start a text, so a new text can start from it; train_data: the path its run
    trained on (None: tiny Shakespeare, or not known)."""
    model: GPT
    tokenizer: bpe.Tokenizer
    tokenizer_dir: Path
    name: str
    description: str
    trained_on_eot: bool
    train_data: str | None = None

    def document_start(self) -> list[int]:
        return document_start(self.tokenizer, self.trained_on_eot)


def document_start(tokenizer, trained_on_eot: bool) -> list[int]:
    """The prompt that starts a new text: <|endoftext|> for a model that has seen it start
    documents, else a newline (a model trained on one document never saw the token)."""
    if trained_on_eot and tokenizer.eot_token is not None:
        return [tokenizer.eot_token]
    return tokenizer.encode_ordinary("\n")


def load_model(out_dir="out", which: str | None = None, init_from: str | None = None,
               tokenizer: Path | None = None, quantize: str | None = None) -> LoadedModel:
    """The model the flags of add_model_arguments name. `which` is --checkpoint: a name in
    out_dir (best, latest, step-N) or a checkpoint folder's path; quantize: "int8" for int8
    weight matrices (a checkpoint's are quantized straight from its file, never all in memory
    as float32)."""
    if init_from:
        if which is not None:
            raise ConfigError("give --checkpoint or --init-from, not both")
        model = hf.load(init_from)
        if quantize:
            model = quantize_model(model)
        folder = hf.resolve(init_from)
        tokenizer_dir = tokenizer or folder
        name, trained_on_eot, train_data = Path(init_from).name, True, None
        description = f"Hugging Face GPT-2 {folder}" + (", int8 weights" if quantize else "")
    else:
        if which is not None and not CHECKPOINT_NAMES.fullmatch(which):
            ckpt = checkpoint.load(which)  # a path
        else:
            ckpt = checkpoint.load(out_dir, which)
        model = quantize_model(GPT(ckpt.config, init=False), ckpt.tensors) if quantize else ckpt.build_model()
        tokenizer_dir = tokenizer or ckpt.tokenizer_dir
        if tokenizer_dir is None:
            raise TokenizerError(f"checkpoint {ckpt.path} has no tokenizer/ folder; pass --tokenizer DIR")
        name = ckpt.path.resolve().parent.name if (ckpt.path.parent / checkpoint.POINTER).exists() \
            else ckpt.path.resolve().name
        description = ckpt.summary() + (", int8 weights" if quantize else "")
        trained_on_eot = ckpt.train_state.get("trained_on_eot", True)
        train_data = ckpt.train_state.get("data")
    tok = load_tokenizer(tokenizer_dir)
    if tok.n_vocab > model.config.vocab_size:
        raise TokenizerError(f"the tokenizer in {tokenizer_dir} has {tok.n_vocab} tokens but the model only "
                             f"{model.config.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)")
    return LoadedModel(model, tok, Path(tokenizer_dir), name, description, trained_on_eot, train_data)
