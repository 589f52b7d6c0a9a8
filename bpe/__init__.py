"""A byte-level BPE tokenizer written from scratch: GPT-2's encoder, and a trainer for new
vocabularies in GPT-2's file format.

    import bpe
    enc = bpe.load("../shared/gpt2")          # folder with encoder.json + vocab.bpe
    ids = enc.encode("Hello world")           # [15496, 995], GPT-2's ids
    enc.decode(ids)                           # 'Hello world'
    tok = bpe.train([Path("corpus.txt")], vocab_size=4096)  # texts (str) work too
    tok.save("out/tokenizer")                 # writes encoder.json + vocab.bpe
"""
from .encoder import Tokenizer, load
from .files import VocabError
from .trainer import train

__all__ = ["Tokenizer", "VocabError", "load", "train"]
