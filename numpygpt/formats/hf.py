"""Hugging Face GPT-2 checkpoints in and out: a name table, not a puzzle.

A `GPT2LMHeadModel` folder holds config.json and model.safetensors. Its tensors carry our names
behind a `transformer.` prefix, and its Conv1D weights are stored (in, out), exactly our layout,
so loading is a copy. Exported folders load with `GPT2LMHeadModel.from_pretrained(folder)` and
`GPT2TokenizerFast.from_pretrained(folder)`.

Nothing here downloads: a model name (`gpt2`, `gpt2-medium`, ...) is looked up in the local
Hugging Face cache only.
"""
import json
import os
from pathlib import Path

import numpy as np

from bpe.files import VocabError, find_vocab_files

from ..config import GPTConfig
from ..errors import FormatError, HFError
from ..model import GPT
from . import safetensors

PREFIX = "transformer."
# Buffers older GPT-2 checkpoints carry that are not parameters (the causal mask).
NOT_PARAMETERS = (".attn.bias", ".attn.masked_bias")
EOT_ID_GPT2 = 50256


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def resolve(name_or_path) -> Path:
    """A folder with config.json, or a model name found in the local Hugging Face cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    repo = hub_cache_dir() / f"models--{str(name_or_path).replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.exists():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if (snapshot / "config.json").exists():
            return snapshot
    raise HFError(f"{name_or_path} is neither a folder nor a model in the local Hugging Face cache "
                  f"({hub_cache_dir()}); nothing is downloaded: fetch it once with huggingface-cli "
                  f"download {name_or_path}, or pass a folder")


def config_from_hf(hf: dict, dtype: str = "float32", dropout: float | None = None) -> GPTConfig:
    """Our GPTConfig for a Hugging Face GPT-2 config.json, refusing what we do not implement."""
    architectures = hf.get("architectures") or []
    if "model_type" not in hf and {"n_layer", "n_embd", "block_size"} <= set(hf):
        raise HFError("this is a numpygpt checkpoint, not a Hugging Face folder: continue its run with "
                      "train --resume --out-dir, or sample, eval and export it")
    if hf.get("model_type") != "gpt2" or any(a not in ("GPT2LMHeadModel", "GPT2Model") for a in architectures):
        raise HFError(f"config.json describes a {hf.get('model_type')!r} model ({', '.join(architectures) or '?'}); "
                      "only GPT-2 (GPT2LMHeadModel) can be loaded")
    unsupported = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "layer_norm_epsilon": (1e-5,),
                   "n_inner": (None, 4 * hf.get("n_embd", 0)), "scale_attn_weights": (True,),
                   "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,)}
    for key, allowed in unsupported.items():
        if key in hf and hf[key] not in allowed:
            raise HFError(f"config.json sets {key} = {hf[key]!r}; numpygpt implements only {allowed[0]!r}")
    try:
        return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                         n_head=hf["n_head"], n_embd=hf["n_embd"],
                         dropout=hf.get("resid_pdrop", 0.0) if dropout is None else dropout,
                         tie_weights=hf.get("tie_word_embeddings", True), dtype=dtype)
    except KeyError as e:
        raise HFError(f"config.json lacks {e.args[0]}") from None
    except ValueError as e:
        raise HFError(f"config.json: {e}") from None


def load(name_or_path, dtype: str = "float32", dropout: float | None = None) -> GPT:
    """A GPT with the weights of a Hugging Face GPT-2 folder (or cached model name)."""
    folder = resolve(name_or_path)
    try:
        hf_config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise HFError(f"{folder} has no config.json") from None
    except json.JSONDecodeError as e:
        raise HFError(f"{folder}/config.json is not valid JSON ({e})") from None
    config = config_from_hf(hf_config, dtype, dropout)
    weights = folder / "model.safetensors"
    if not weights.exists():
        other = "pytorch_model.bin is a pickle, which numpygpt does not read; " \
            if (folder / "pytorch_model.bin").exists() else ""
        raise HFError(f"{folder} has no model.safetensors; {other}save it with save_pretrained(safe_serialization=True)")
    try:
        tensors, _ = safetensors.load(weights)
    except FormatError as e:
        raise HFError(str(e)) from None
    model = GPT(config, init=False)
    ours = {}
    for name, array in tensors.items():
        name = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if name.endswith(NOT_PARAMETERS) or (name == "lm_head.weight" and config.tie_weights):
            continue
        ours[name] = array
    try:
        model.params.load_state_dict(ours)
    except ValueError as e:
        raise HFError(f"{weights}: {e}") from None
    return model


def hf_config(config: GPTConfig, eot_token: int | None) -> dict:
    eot = EOT_ID_GPT2 if eot_token is None else eot_token
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
            "n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.n_embd,
            "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
            "activation_function": "gelu_new", "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
            "scale_attn_weights": True, "use_cache": True, "tie_word_embeddings": config.tie_weights,
            "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": config.dtype}


# What `export` writes; a folder holding these alone (and a GPT-2 config.json) is an earlier
# export, which a new one may replace.
EXPORT_FILES = {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"}


def check_export_folder(folder: Path):
    """Refuse to write into a folder that holds anything but an earlier export: its
    config.json and model.safetensors would replace a checkpoint's, or a user's own files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise HFError(f"{folder} is a file, not a folder")
    names = {entry.name for entry in folder.iterdir()}
    others = sorted(names - EXPORT_FILES)
    try:
        earlier_export = "config.json" not in names or \
            json.loads((folder / "config.json").read_text()).get("model_type") == "gpt2"
    except (OSError, ValueError, AttributeError):
        earlier_export = False
    if others or not earlier_export:
        shown = others[0] if others else "config.json"
        raise HFError(f"{folder} already holds {shown}{' and more' if len(others) > 1 else ''}, not an earlier "
                      "export; export into a new or empty folder")


def export(model: GPT, folder, tokenizer_dir=None, eot_token: int | None = None):
    """Write `model` as a Hugging Face GPT-2 folder: config.json, model.safetensors and, given a
    tokenizer folder, vocab.json + merges.txt. Biases our model leaves out (the seed's qkv) are
    written as zeros, which computes the same function. The folder must be new, empty or an
    earlier export (check_export_folder)."""
    try:
        check_export_folder(Path(folder))
        write_folder(model, Path(folder), tokenizer_dir, eot_token)
    except OSError as e:
        raise HFError(f"cannot write {e.filename or folder}: {e.strerror or e}") from None


def write_folder(model: GPT, folder: Path, tokenizer_dir, eot_token):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name in model.params:
        key = name if name == "lm_head.weight" else PREFIX + name
        tensors[key] = model.params[name]
    c = model.config.n_embd
    for i in range(model.config.n_layer):
        for name, size in (("attn.c_attn.bias", 3 * c), ("attn.c_proj.bias", c), ("mlp.c_fc.bias", 4 * c),
                           ("mlp.c_proj.bias", c)):
            tensors.setdefault(f"{PREFIX}h.{i}.{name}", np.zeros(size, model.params.dtype))
    with open(folder / "model.safetensors", "wb") as f:
        safetensors.save(tensors, f, {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(model.config, eot_token), indent=2))
    if tokenizer_dir is not None:
        try:
            encoder, merges = find_vocab_files(tokenizer_dir)
        except VocabError as e:
            raise HFError(str(e)) from None
        (folder / "vocab.json").write_bytes(encoder.read_bytes())
        (folder / "merges.txt").write_bytes(merges.read_bytes())
        eot = "<|endoftext|>"
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "GPT2Tokenizer", "model_max_length": model.config.block_size,
             "bos_token": eot, "eos_token": eot, "unk_token": eot, "add_prefix_space": False}, indent=2))
