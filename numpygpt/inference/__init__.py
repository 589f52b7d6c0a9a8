"""Running a trained model: decoding over a KV cache, choosing tokens, loading a model.

    generate.py   a prompt's continuations, one token per step over the KV cache
    slots.py      many independent sequences in the slots of one KV cache (the server's)
    sampling.py   temperature, top-k and top-p on any logits
    loading.py    a model and its tokenizer from a checkpoint or a Hugging Face folder
"""
