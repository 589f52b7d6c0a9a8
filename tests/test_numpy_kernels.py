"""NUMPYGPT_KERNELS=numpy: the model on the plain NumPy references. A few training steps give
the losses the Numba kernels give, to float32 rounding, and every gradient check passes."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

TINY = ["--model", "tiny", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0",
        "--vocab-size", "300", "--steps", "6", "--eval-interval", "3", "--dropout", "0.1"]


def numpygpt(*args, kernels, tmp_path):
    env = {**os.environ, "NUMPYGPT_KERNELS": kernels, "NUMPYGPT_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "numpygpt", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_training_on_numpy_gives_the_losses_of_the_numba_kernels(tmp_path, data_dir):
    losses = {}
    for kernels in ("numba", "numpy"):
        out = tmp_path / kernels
        done = numpygpt("train", *TINY, "--data", data_dir / "the-verdict.txt", "--out-dir", out, kernels=kernels,
                        tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[kernels] = [row.get("val_loss", row["loss"]) for row in rows]
    assert len(losses["numpy"]) == len(losses["numba"]) >= 2
    assert losses["numpy"] == pytest.approx(losses["numba"], rel=1e-4)


def test_every_gradient_check_passes_on_numpy(tmp_path):
    done = numpygpt("gradcheck", kernels="numpy", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 12 checks passed" in done.stdout


def test_an_unknown_kernel_choice_is_one_error_line(tmp_path):
    done = numpygpt("gradcheck", "gelu", kernels="cuda", tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "NUMPYGPT_KERNELS must be numba or numpy, not 'cuda'" in done.stderr
