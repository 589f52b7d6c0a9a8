"""A byte-level BPE tokenizer written from scratch: GPT-2's encoder, with tiktoken's API, and
a trainer for new vocabularies in GPT-2's file format.

    import bpe
    enc = bpe.gpt2("gpt2")                    # folder with GPT-2's encoder.json + vocab.bpe
    ids = enc.encode("Hello world")           # [15496, 995], GPT-2's ids (tiktoken's too)
    enc.decode(ids)                           # 'Hello world'
    ids, offsets = enc.encode_ordinary_batch_to_numpy(texts)  # uint32 ids of all texts
    tok = bpe.train([Path("corpus.txt")], vocab_size=4096)  # texts (str) work too
    tok.save("out/tokenizer")                 # writes encoder.json + vocab.bpe
    bpe.load("out/tokenizer")                 # any vocabulary in that format

`bpe.gpt2(folder)` stands in for tiktoken's get_encoding("gpt2"); the Tokenizer it returns
has Encoding's methods (encode, encode_ordinary, encode_batch, encode_to_numpy, decode,
decode_batch, decode_single_token_bytes, n_vocab, eot_token, ...; see Tokenizer), and gives
tiktoken's ids on every text: the pre-tokenizer's character classes are pinned to the Unicode
version tiktoken uses (see unicode_classes.py).
"""
from .encoder import Tokenizer, UnknownTokenError, gpt2, load
from .files import VocabError
from .trainer import train

__all__ = ["Tokenizer", "UnknownTokenError", "VocabError", "gpt2", "load", "train"]
