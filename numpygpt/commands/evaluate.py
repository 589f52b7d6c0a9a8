"""Score a model on a whole text: nats per token, perplexity and bits per byte over every token.

    numpygpt eval                                         # out/'s best checkpoint on its run's validation text
    numpygpt eval --data data/the-verdict.txt --split all --stride 128
    numpygpt eval --init-from gpt2 --data data/tinyshakespeare.txt --json
    numpygpt eval --data data/shards --split val          # a shard folder from numpygpt prepare

The text is tokenized as training tokenizes it (documents joined by <|endoftext|>) and scored
in windows of the model's context, --stride tokens apart; each token is scored once (see
numpygpt.inference.scoring). The trainer's own evaluation measures 20 random batches; this
measures every token of the split.
"""
import json
import sys
from pathlib import Path

import numpy as np

from ..data import shards, sources
from ..data.text import encode_documents, read_documents, split_documents
from ..errors import ConfigError
from ..inference.loading import add_model_arguments, load_model
from ..inference.scoring import score_tokens
from ..memory import reuse_freed_memory
from ..progress import Progress, bar
from .args import integer

SPLITS = ("val", "train", "all")


def add_arguments(p):
    add_model_arguments(p, "scored")
    p.add_argument("--data", metavar="PATH", help="a text or .jsonl file, a folder of them, or a shard folder "
                   "(default: the data the checkpoint's run trained on)")
    p.add_argument("--split", choices=SPLITS, default="val",
                   help="the part of it to score: the validation or training split as training made it, or all")
    p.add_argument("--stride", type=integer(1), metavar="N",
                   help="tokens between windows, at most the context (default: half the context)")
    p.add_argument("--batch-size", type=integer(1), default=8, metavar="N", help="windows per forward pass")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def text_tokens(path, split: str, tokenizer) -> tuple[np.ndarray, int]:
    """(token ids, UTF-8 bytes of the text they encode) of a split of a text file or folder."""
    documents = read_documents(path)
    if split != "all":
        documents = split_documents(documents)[0 if split == "train" else 1]
    ids = encode_documents(tokenizer, documents, np.int64)
    return ids, sum(len(d.encode("utf-8")) for d in documents)


def shard_tokens(folder, split: str, tokenizer_dir) -> tuple[np.ndarray, int]:
    """(token ids, UTF-8 bytes) of a split of a shard folder made with the model's vocabulary."""
    if split == "all":
        raise ConfigError("a shard folder holds a train and a val split; pass --split train or val")
    dataset = shards.load_shards(folder, str(tokenizer_dir))
    tokens = getattr(dataset, split)
    manifest = shards.read_manifest(Path(folder))
    return np.asarray(tokens[:len(tokens)], dtype=np.int64), manifest["cursor"]["text_bytes"][split]


def run(args):
    loaded = load_model(args.out_dir, args.checkpoint, args.init_from, args.tokenizer, args.quantize)
    progress = Progress()
    progress.message(f"{args.prog}: loaded {loaded.description}")
    data = args.data
    if data is None:
        if args.init_from:
            raise ConfigError("a Hugging Face model has no training data of its own: pass --data PATH")
        data = loaded.train_data or sources.project_file("tinyshakespeare.txt")
    if shards.is_shard_dir(data):
        ids, utf8_bytes = shard_tokens(data, args.split, loaded.tokenizer_dir)
    else:
        ids, utf8_bytes = text_tokens(data, args.split, loaded.tokenizer)
    if len(ids) < 2:
        raise ConfigError(f"the {args.split} split of {data} has {len(ids)} token(s); scoring needs at least 2")

    def show(done, total):
        progress.status(f"{bar(done / total)} {done:,}/{total:,} tokens", force=done == total)

    reuse_freed_memory()  # each batch of windows reuses the last one's memory
    scores = score_tokens(loaded.model, ids, stride=args.stride, batch_size=args.batch_size, on_progress=show)
    progress.close()
    figures = {"data": str(data), "split": args.split, "model": loaded.description, "tokens": scores.tokens,
               "utf8_bytes": utf8_bytes, "context": loaded.model.config.block_size,
               "stride": args.stride or max(1, loaded.model.config.block_size // 2),
               "nats_per_token": scores.nats_per_token, "perplexity": scores.perplexity,
               "bits_per_byte": scores.bits_per_byte(utf8_bytes)}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{figures['tokens']:,} tokens of {data} ({args.split}), windows of {figures['context']} every "
              f"{figures['stride']}: {figures['nats_per_token']:.4f} nats/token, perplexity "
              f"{figures['perplexity']:.2f}, {figures['bits_per_byte']:.4f} bits/byte")
    sys.stdout.flush()
