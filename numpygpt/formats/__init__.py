"""Files numpygpt reads and writes for keeps.

    atomic.py       every file written whole or not at all
    safetensors.py  the safetensors format, with NumPy alone
    checkpoint.py   training checkpoints: weights, optimizer, state, tokenizer; best and latest
    hf.py           Hugging Face GPT-2 folders in and out
"""
