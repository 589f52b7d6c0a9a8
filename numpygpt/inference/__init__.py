"""Running a trained model: decoding over a KV cache, choosing tokens, loading a model.

    decoder.py    sequences in the slots of one KV cache, stepped together, the window slid
    generate.py   a prompt's continuations, one token per step; text as it comes
    sampling.py   temperature, top-k and top-p on any logits
    loading.py    a model and its tokenizer from a checkpoint or a Hugging Face folder
"""
