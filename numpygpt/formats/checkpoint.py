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
instant leaves the previous checkpoint.json pointing at a complete previous checkpoint; a
folder the pointer names is never replaced or removed while it names it. train_state.json
records the SHA-256 of each tensor file, checked when it is read.
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
        model = GPT(self.config, init=False)
        try:
            model.params.load_state_dict(self.tensors)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        return model


def read_pointer(out_dir: Path) -> dict:
    """{tag: checkpoint folder name} of an output directory ({} when it has none yet)."""
    pointer = Path(out_dir) / POINTER
    if not pointer.exists():
        return {}
    try:
        tags = json.loads(pointer.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{pointer} cannot be read ({getattr(e, 'strerror', None) or e}); delete it or "
                              "choose another --out-dir") from None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) and re.fullmatch(
            r"step-\d+(-\d+)?", v) for k, v in tags.items()):
        raise CheckpointError(f"{pointer} does not name checkpoints (it should read like "
                              '{"latest": "step-000200"}); delete it or choose another --out-dir')
    return tags


def read_tokenizer_files(folder) -> dict:
    """{file name: bytes} of a tokenizer folder's encoder.json + vocab.bpe (GPT-2's names, also
    for a Hugging Face vocab.json + merges.txt), held in memory so that saving a checkpoint
    never depends on a folder that an earlier save may have replaced."""
    encoder, merges = find_vocab_files(folder)
    return {"encoder.json": encoder.read_bytes(), "vocab.bpe": merges.read_bytes()}


def check_writable(out_dir):
    """Raise CheckpointError now, not at the first save, if out_dir cannot take checkpoints."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoints to {out_dir} ({e.strerror or e}); pass another "
                              "--out-dir") from None


def remove_leftovers(out_dir: Path):
    """What interrupted saves left: hidden temporary folders and files of other processes."""
    for stale in out_dir.glob(".step-*"):
        if not stale.name.endswith(f".tmp-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    atomic.remove_stale(out_dir)


def save(out_dir, model: GPT, *, step: int, train_state: dict | None = None, optimizer_state: dict | None = None,
         tokenizer_files: dict | None = None, tags=("latest",)) -> Path:
    """Write a checkpoint of `model` (and optimizer/train state) at `step` and point each tag
    ("latest", "best") at it. Checkpoint directories no tag points at any more are removed.
    optimizer_state: AdamW's state_dict(), {"m": (P,), "v": (P,), "step": int}.

    A checkpoint the pointer names is never touched: one saved again at the same step goes to
    a folder of its own (step-000200-1), and the pointer moves to it only once it is complete.
    A write that fails (a full disk) removes what it wrote and raises one CheckpointError
    that says the last checkpoint is intact."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pointer = read_pointer(out_dir)
    remove_leftovers(out_dir)
    name = f"step-{step:06d}"
    copy = 0
    while (out_dir / name).exists():
        copy += 1
        name = f"step-{step:06d}-{copy}"
    final = out_dir / name
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir()
        write_folder(tmp, model, step, train_state, optimizer_state, tokenizer_files)
        os.replace(tmp, final)
        atomic.fsync_dir(out_dir)
        pointer.update({tag: name for tag in tags})
        atomic.write_json(out_dir / POINTER, pointer)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if name not in read_pointer(out_dir).values():  # published, but never pointed at
            shutil.rmtree(final, ignore_errors=True)
        kept = read_pointer(out_dir).get("latest")
        raise CheckpointError(f"{e.strerror or e} writing {e.filename or final}; "
                              + (f"the last checkpoint, {out_dir / kept}, is intact" if kept else
                                 "no checkpoint was kept")) from None
    for stale in out_dir.glob("step-*"):
        if stale.name not in pointer.values():
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return final


def write_folder(folder: Path, model: GPT, step, train_state, optimizer_state, tokenizer_files):
    """A checkpoint's files, flushed (the folder is published by renaming it whole: its files
    need no renames of their own). train_state.json records each tensor file's SHA-256."""
    atomic.write_file(folder / "model.safetensors", lambda f: safetensors.save(
        model.params.values, f, {"format": "numpygpt"}), sync_folder=False)
    checksums = {"model.safetensors": atomic.sha256_file(folder / "model.safetensors")}
    atomic.write_json(folder / "config.json", model.config.to_dict(), sync_folder=False)
    if optimizer_state is not None:
        state = optimizer_state
        atomic.write_file(folder / "optimizer.safetensors", lambda f: safetensors.save(
            {"m": state["m"], "v": state["v"]}, f, {"step": state["step"]}), sync_folder=False)
        checksums["optimizer.safetensors"] = atomic.sha256_file(folder / "optimizer.safetensors")
    atomic.write_json(folder / "train_state.json", {"step": step, **(train_state or {}), "sha256": checksums},
                      sync_folder=False)
    if tokenizer_files:
        (folder / "tokenizer").mkdir()
        for file_name, content in tokenizer_files.items():
            atomic.write_bytes(folder / "tokenizer" / file_name, content)
    atomic.fsync_dir(folder)


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
        if not (path / pointer[which]).is_dir():
            raise CheckpointError(f"{path / POINTER} names {pointer[which]} as {which}, which is not a checkpoint "
                                  f"folder (it holds: {describe_checkpoints(path)}); name one (sample, eval, "
                                  "export: --checkpoint step-N)")
        return path / pointer[which]
    match = re.fullmatch(r"step-?(\d+)", which)
    if match is None:
        raise CheckpointError(f"--checkpoint {which}: say best, latest or step-N (N a step number)")
    step = int(match[1])
    folders = sorted((p for p in path.glob(f"step-{step:06d}*") if re.fullmatch(rf"step-{step:06d}(-\d+)?", p.name)
                      and p.is_dir()), key=lambda p: int(p.name.partition("-")[2].partition("-")[2] or 0))
    if not folders:
        raise CheckpointError(f"{path} holds no checkpoint of step {step}; it holds: {describe_checkpoints(path)}")
    return folders[-1]  # the latest save of that step


def load(path, which: str | None = None, optimizer: bool = False) -> Checkpoint:
    """Read a checkpoint (see `resolve` for what path and which may be). The weights are
    checked against the SHA-256 the checkpoint recorded; optimizer: read (and check) AdamW's
    state too, as resuming needs, which generation and export do not."""
    path = resolve(path, which)
    try:
        config = GPTConfig.from_dict(json.loads((path / "config.json").read_text()))
        train_state = json.loads((path / "train_state.json").read_text()) \
            if (path / "train_state.json").exists() else {}
        if not isinstance(train_state, dict):
            raise ValueError("train_state.json does not hold an object")
        verify(path, "model.safetensors", train_state)
        tensors, _ = safetensors.load(path / "model.safetensors")
        optimizer_state = None
        if optimizer and (path / "optimizer.safetensors").exists():
            verify(path, "optimizer.safetensors", train_state)
            moments, meta = safetensors.load(path / "optimizer.safetensors")
            optimizer_state = {"m": np.array(moments["m"]), "v": np.array(moments["v"]),
                               "step": int(meta["step"])}
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} is incomplete: {Path(e.filename).name} is missing") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from None
    tokenizer_dir = path / "tokenizer"
    return Checkpoint(path, config, tensors, train_state, optimizer_state,
                      tokenizer_dir if tokenizer_dir.exists() else None)


def verify(path: Path, name: str, train_state: dict):
    """Raise CheckpointError unless the file's SHA-256 is the one recorded when it was saved
    (a checkpoint from before checksums were recorded is read as it is)."""
    expected = (train_state.get("sha256") or {}).get(name)
    if expected is not None and atomic.sha256_file(path / name) != expected:
        raise CheckpointError(f"{path / name} is damaged (its SHA-256 is not the one recorded when it was "
                              "saved); load another of the run's checkpoints (sample, eval, export: "
                              "--checkpoint step-N) or train again")
