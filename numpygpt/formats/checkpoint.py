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
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpe.files import find_vocab_files

from ..config import GPTConfig
from ..errors import CheckpointError
from ..model import GPT
from . import atomic, safetensors

POINTER = "checkpoint.json"


@dataclass
class Checkpoint:
    path: Path
    config: GPTConfig
    tensors: dict
    train_state: dict
    optimizer_state: dict | None
    tokenizer_dir: Path | None

    def summary(self) -> str:
        """What was loaded, in the words every command prints: "out/step-002000 (step 2000,
        best; validation loss 4.3650, 2.180 bits/byte)"."""
        tags = [tag for tag, name in read_pointer(self.path.parent).items() if name == self.path.name]
        facts = [f"step {self.train_state.get('step', '?')}", *tags]
        evaluation = self.train_state.get("evaluation")
        if evaluation:
            facts[-1] += f"; validation loss {evaluation['val_loss']:.4f}, {evaluation['val_bpb']:.3f} bits/byte"
        return f"{self.path} ({', '.join(facts)})"

    def build_model(self) -> GPT:
        model = GPT(self.config)
        try:
            model.params.load_state_dict(self.tensors)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        return model


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
    # The folder is published by renaming it whole: its files need flushing, not renaming.
    atomic.write_file(tmp / "model.safetensors", lambda f: safetensors.save(
        model.params.values, f, {"format": "numpygpt"}), sync_folder=False)
    atomic.write_json(tmp / "config.json", model.config.to_dict(), sync_folder=False)
    atomic.write_json(tmp / "train_state.json", {"step": step, **(train_state or {})}, sync_folder=False)
    if optimizer_state is not None:
        state = optimizer_state
        atomic.write_file(tmp / "optimizer.safetensors", lambda f: safetensors.save(
            {"m": state["m"], "v": state["v"]}, f, {"step": state["step"]}), sync_folder=False)
    if tokenizer_files:
        (tmp / "tokenizer").mkdir()
        for file_name, content in tokenizer_files.items():
            atomic.write_bytes(tmp / "tokenizer" / file_name, content)
    atomic.fsync_dir(tmp)
    pointer = read_pointer(out_dir)
    if final.exists():  # re-saving the same step (e.g. best == latest): replace it whole
        old = out_dir / f".{name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    atomic.fsync_dir(out_dir)
    pointer.update({tag: name for tag in tags})
    atomic.write_json(out_dir / POINTER, pointer)
    for stale in out_dir.glob("step-*"):
        if stale.name not in pointer.values():
            shutil.rmtree(stale, ignore_errors=True)
    return final


def describe_checkpoints(out_dir: Path) -> str:
    """"step-000200 (latest), step-000150 (best)": what an output directory holds."""
    pointer = read_pointer(out_dir)
    names = sorted(p.name for p in Path(out_dir).glob("step-*") if (p / "model.safetensors").exists())
    tags = {name: [tag for tag, target in pointer.items() if target == name] for name in names}
    return ", ".join(f"{name} ({', '.join(tags[name])})" if tags[name] else name for name in names) or "none"


def resolve(path, which: str | None = None) -> Path:
    """The checkpoint folder that `which` names in the output directory `path`: "best",
    "latest", "step-N", or None for best when the run evaluated, else latest. `path` may
    also be a checkpoint folder itself (then `which` must be None)."""
    path = Path(path)
    if (path / "model.safetensors").exists() and which is None:
        return path
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: train one first (numpygpt train), or pass --out-dir")
    pointer = read_pointer(path)
    if which is None:
        which = "best" if "best" in pointer else "latest"
    if which in ("best", "latest"):
        if which not in pointer:
            raise CheckpointError(f"{path} holds no {which} checkpoint (it holds: {describe_checkpoints(path)}); "
                                  "train one first (numpygpt train), or pass --out-dir")
        return path / pointer[which]
    match = re.fullmatch(r"step-?(\d+)", which)
    if match is None:
        raise CheckpointError(f"--checkpoint {which}: say best, latest or step-N (N a step number)")
    folder = path / f"step-{int(match[1]):06d}"
    if not folder.is_dir():
        raise CheckpointError(f"{path} holds no checkpoint of step {int(match[1])}; it holds: "
                              f"{describe_checkpoints(path)}")
    return folder


def load(path, which: str | None = None) -> Checkpoint:
    """Read a checkpoint (see `resolve` for what path and which may be)."""
    path = resolve(path, which)
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
