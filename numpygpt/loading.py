"""A model and its tokenizer, ready to generate: what sample.py and the server both load.

From a training output directory or checkpoint (ours: the tokenizer travels in its
tokenizer/ folder) or a Hugging Face GPT-2 folder or cached model name (`init_from`); a
tokenizer folder given explicitly wins over either.
"""
from pathlib import Path

import bpe

from . import checkpoint, hf


def add_model_arguments(parser, verb: str):
    """The flags that say which model and tokenizer to load: --out-dir (its latest checkpoint
    is `verb`, e.g. "served"), --checkpoint, --init-from, --tokenizer."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out-dir", default="out", metavar="DIR", help=f"training output directory; its "
                       f"latest checkpoint is {verb} (default: out)")
    where.add_argument("--checkpoint", type=Path, metavar="PATH", help="a checkpoint directory "
                       "(out/step-000200) or an output directory")
    where.add_argument("--init-from", metavar="PATH", help="a Hugging Face GPT-2 folder, or a model name "
                       "(gpt2, gpt2-medium, ...) found in the local Hugging Face cache")
    parser.add_argument("--tokenizer", type=Path, metavar="DIR",
                        help="folder with encoder.json + vocab.bpe (default: the checkpoint's own)")


class LoadError(ValueError):
    """The model and tokenizer asked for cannot serve together; the message says what to pass."""


def load_model_and_tokenizer(out_dir=None, checkpoint_path=None, init_from=None, tokenizer=None):
    """(model, tokenizer, tokenizer_dir, name): name is the folder's or model's own name.

    Raises checkpoint.CheckpointError, hf.HFError, bpe.VocabError or LoadError."""
    if init_from:
        model = hf.load(init_from)
        tokenizer_dir = tokenizer or hf.resolve(init_from)
        name = Path(init_from).name
    else:
        where = checkpoint_path or out_dir
        ckpt = checkpoint.load(where)
        model = ckpt.build_model()
        tokenizer_dir = tokenizer or ckpt.tokenizer_dir
        if tokenizer_dir is None:
            raise LoadError(f"checkpoint {ckpt.path} has no tokenizer/ folder; pass --tokenizer DIR")
        name = Path(where).resolve().name
    tok = bpe.load(tokenizer_dir)
    if tok.n_vocab > model.config.vocab_size:
        raise LoadError(f"the tokenizer in {tokenizer_dir} has {tok.n_vocab} tokens but the model only "
                        f"{model.config.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)")
    return model, tok, tokenizer_dir, name
