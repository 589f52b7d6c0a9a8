"""Checkpoints that never lose work: complete directories, published by one atomic rename.

Layout of an output directory:
    out/
      checkpoint.json          {"latest": "step-000200", "best": "step-000150"}
      step-000200/
        model.safetensors      the weights, named as in GPT-2 (h.0.attn.c_attn.weight, ...)
        config.json            the GPTConfig
        optimizer.safetensors  AdamW's moments (training checkpoints only)
        train_state.json       step, random generator states, data position, best loss, ...
        tokenizer/             encoder.json + vocab.bpe, so sampling decodes with the right one
A checkpoint is written into a hidden temporary directory, flushed to disk, renamed into place,
and only then does checkpoint.json (itself replaced atomically) point at it. A crash at any
instant leaves the previous checkpoint.json pointing at a complete previous checkpoint.
"""
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpe.files import find_vocab_files

from . import safetensors
from .config import GPTConfig
from .model import GPT

POINTER = "checkpoint.json"


class CheckpointError(Exception):
    """A checkpoint that is missing, corrupt or does not fit; the message says which."""


@dataclass
class Checkpoint:
    path: Path
    config: GPTConfig
    tensors: dict
    train_state: dict
    optimizer_state: dict | None
    tokenizer_dir: Path | None

    def build_model(self) -> GPT:
        model = GPT(self.config)
        try:
            model.params.load_state_dict(self.tensors)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        return model


def _write_atomically(path: Path, write):
    """write(file) into a temporary sibling, flush it to disk, then rename over path."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj):
    _write_atomically(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_pointer(out_dir: Path) -> dict:
    pointer = Path(out_dir) / POINTER
    if not pointer.exists():
        return {}
    try:
        return json.loads(pointer.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{pointer} is corrupt; delete it or choose another --out-dir") from None


def read_tokenizer_files(folder) -> dict:
    """{file name: bytes} of a tokenizer folder's encoder.json + vocab.bpe (GPT-2's names, also
    for a Hugging Face vocab.json + merges.txt), held in memory so that saving a checkpoint
    never depends on a folder that an earlier save may have replaced."""
    encoder, merges = find_vocab_files(folder)
    return {"encoder.json": encoder.read_bytes(), "vocab.bpe": merges.read_bytes()}


def save(out_dir, model: GPT, *, step: int, train_state: dict | None = None, optimizer_state: dict | None = None,
         tokenizer_files: dict | None = None, tags=("latest",)) -> Path:
    """Write a checkpoint of `model` (and optimizer/train state) at `step` and point each tag
    ("latest", "best") at it. Checkpoint directories no tag points at any more are removed.
    optimizer_state: AdamW's state_dict(), {"m": (P,), "v": (P,), "step": int}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = out_dir / name
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_atomically(tmp / "model.safetensors",
                      lambda f: safetensors.save(model.params.values, f, {"format": "numpygpt"}))
    _write_json(tmp / "config.json", model.config.to_dict())
    _write_json(tmp / "train_state.json", {"step": step, **(train_state or {})})
    if optimizer_state is not None:
        state = optimizer_state
        _write_atomically(tmp / "optimizer.safetensors", lambda f: safetensors.save(
            {"m": state["m"], "v": state["v"]}, f, {"step": state["step"]}))
    if tokenizer_files:
        (tmp / "tokenizer").mkdir()
        for file_name, content in tokenizer_files.items():
            _write_atomically(tmp / "tokenizer" / file_name, lambda f: f.write(content))
    _fsync_dir(tmp)
    pointer = read_pointer(out_dir)
    if final.exists():  # re-saving the same step (e.g. best == latest): replace it whole
        old = out_dir / f".{name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(out_dir)
    pointer.update({tag: name for tag in tags})
    _write_json(out_dir / POINTER, pointer)
    _fsync_dir(out_dir)
    for stale in out_dir.glob("step-*"):
        if stale.name not in pointer.values():
            shutil.rmtree(stale, ignore_errors=True)
    return final


def resolve(path, tag: str = "latest") -> Path:
    """An output directory (follow its pointer to `tag`) or a checkpoint directory itself."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path
    pointer = read_pointer(path)
    if tag not in pointer:
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}: run train.py first (or pass --out-dir)")
        raise CheckpointError(f"no {tag} checkpoint in {path}: run train.py first (or pass --out-dir)")
    return path / pointer[tag]


def load(path, tag: str = "latest") -> Checkpoint:
    """Read a checkpoint (see `resolve` for what path may be)."""
    path = resolve(path, tag)
    try:
        config = GPTConfig.from_dict(json.loads((path / "config.json").read_text()))
        tensors, _ = safetensors.load(path / "model.safetensors")
        train_state = json.loads((path / "train_state.json").read_text()) \
            if (path / "train_state.json").exists() else {}
        optimizer_state = None
        if (path / "optimizer.safetensors").exists():
            moments, meta = safetensors.load(path / "optimizer.safetensors")
            optimizer_state = {"m": np.array(moments["m"]), "v": np.array(moments["v"]),
                               "step": int(meta["step"])}
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} is incomplete: {Path(e.filename).name} is missing") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from None
    tokenizer_dir = path / "tokenizer"
    return Checkpoint(path, config, tensors, train_state, optimizer_state,
                      tokenizer_dir if tokenizer_dir.exists() else None)
