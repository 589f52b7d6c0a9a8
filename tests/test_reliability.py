"""Faults a long run meets, each made to happen: a signal or a kill in the middle of a save, a
full disk, leftovers of interrupted saves, SIGTERM, odd files where checkpoints should be,
damaged tensor files, a metrics file torn by a crash. Each must end in one clear line with
every checkpoint intact, never in a traceback or a pointer to nothing."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import train
from conftest import REPO_ROOT
from numpygpt.config import GPTConfig
from numpygpt.errors import CheckpointError
from numpygpt.formats import atomic, checkpoint
from numpygpt.model import GPT

TINY = ["--model", "tiny", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2", "--sample-tokens", "0",
        "--vocab-size", "300"]


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYGPT_DATA_DIR", str(tmp_path / "data"))


def small_model(seed=0):
    return GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=1, n_embd=8), seed=seed)


def error_line(capsys, prog="train.py"):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"{prog}: error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def run_tiny(tmp_path, data_dir, *flags, out="out"):
    return train.main([*TINY, "--data", str(data_dir / "the-verdict.txt"), "--out-dir", str(tmp_path / out), *flags])


def test_saving_a_step_again_never_leaves_the_pointer_at_a_missing_checkpoint(tmp_path, monkeypatch):
    """The folder the pointer names is never replaced: a second save of step 4 goes to a new
    folder; a signal or a failure at any of its renames leaves a loadable checkpoint."""
    out = tmp_path / "out"
    checkpoint.save(out, small_model(0), step=4, tags=["latest", "best"])
    real_replace = os.replace
    for fault in (KeyboardInterrupt, OSError(errno.EIO, "Input/output error")):
        for nth in range(3):  # each rename of the save: folder, pointer, ...
            calls = []

            def replace(src, dst, calls=calls, nth=nth, fault=fault):
                calls.append(dst)
                if len(calls) == nth + 1:
                    raise fault
                return real_replace(src, dst)
            monkeypatch.setattr(os, "replace", replace)
            try:
                checkpoint.save(out, small_model(1), step=4, tags=["latest"])
            except (KeyboardInterrupt, CheckpointError):
                pass
            monkeypatch.setattr(os, "replace", real_replace)
            for tag in ("latest", "best"):
                loaded = checkpoint.load(out, tag)
                assert loaded.train_state["step"] == 4 and loaded.build_model().num_parameters() > 0
    checkpoint.save(out, small_model(2), step=4, tags=["latest"])
    latest, best = checkpoint.resolve(out, "latest"), checkpoint.resolve(out, "best")
    assert latest.name.startswith("step-000004-") and best.name == "step-000004"
    np.testing.assert_array_equal(checkpoint.load(out, "latest").tensors["wte.weight"],
                                  small_model(2).params["wte.weight"])
    assert checkpoint.resolve(out, "step-4") == latest  # the latest save of that step


def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays(tmp_path, monkeypatch):
    out = tmp_path / "out"
    checkpoint.save(out, small_model(0), step=2)
    real_write = atomic.write_file

    def full(path, write, sync_folder=True):
        if path.name == "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write, sync_folder)
    monkeypatch.setattr(atomic, "write_file", full)
    with pytest.raises(CheckpointError) as failure:
        checkpoint.save(out, small_model(1), step=3)
    assert "No space left on device writing" in str(failure.value)
    assert f"the last checkpoint, {out / 'step-000002'}, is intact" in str(failure.value)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", "step-000002"]  # nothing half written


def test_a_full_disk_during_training_ends_with_one_line(tmp_path, data_dir, monkeypatch, capsys):
    real_write = atomic.write_file
    saves = []

    def full_after_first(path, write, sync_folder=True):
        if path.name == "model.safetensors":
            saves.append(path)
            if len(saves) > 1:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write, sync_folder)
    monkeypatch.setattr(atomic, "write_file", full_after_first)
    assert run_tiny(tmp_path, data_dir, "--steps", "10", "--eval-interval", "5") == 2
    line = error_line(capsys)
    assert "No space left on device" in line and "step-000005, is intact" in line


def test_leftovers_of_interrupted_saves_are_cleared(tmp_path):
    out = tmp_path / "out"
    checkpoint.save(out, small_model(0), step=1)
    (out / ".step-000002.tmp-99999").mkdir()
    (out / ".step-000002.tmp-99999" / "model.safetensors").write_bytes(b"x" * 1000)
    (out / ".checkpoint.json.tmp-99999-0a1b2c3d").write_text("{")
    checkpoint.save(out, small_model(1), step=2)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", "step-000002"]


def test_sigterm_saves_and_stops_like_ctrl_c(tmp_path, data_dir):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *TINY, "--data",
                             str(data_dir / "the-verdict.txt"), "--out-dir", str(out), "--steps", "100000"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "train.py: interrupted at step" in err and "continue with --resume" in err and "Traceback" not in err
    assert checkpoint.load(out, "latest").train_state["step"] >= 10


@pytest.mark.parametrize("when", ["start-up", "run"])
def test_ctrl_c_outside_training_is_one_line_and_130(when, monkeypatch, capsys):
    """Ctrl-C while a command's library is still importing, or in a command that keeps
    nothing, ends with exit code 130 and one line that says so."""
    from numpygpt import commands
    from numpygpt.commands import sample

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt()
    if when == "start-up":
        monkeypatch.setattr(commands, "build_parser", interrupted)
    else:
        monkeypatch.setattr(sample, "run", interrupted)
    assert commands.main(["sample"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["numpygpt sample: interrupted"]


def test_a_reader_that_goes_away_ends_the_output_quietly(monkeypatch, capfd):
    """Output into a pipe whose reader has gone (`| head`): exit code 1 and no traceback."""
    from numpygpt import commands
    from numpygpt.commands import tokenizer

    def reader_gone(args):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(tokenizer, "run", reader_gone)
    monkeypatch.setattr(commands.os, "dup2", lambda *fds: None)  # keep pytest's own stdout
    assert commands.main(["tokenizer", "decode", "--vocab", "data/gpt2"]) == 1
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("content", ["null", "42", "[]", '{"latest": 5}', '{"latest": "../elsewhere"}', "{oops"])
def test_a_pointer_that_names_no_checkpoint_is_one_line(tmp_path, content):
    out = tmp_path / "out"
    checkpoint.save(out, small_model(), step=1)
    (out / "checkpoint.json").write_text(content)
    with pytest.raises(CheckpointError, match="checkpoint.json"):
        checkpoint.load(out)


@pytest.mark.parametrize("edit, message", [
    (lambda c: [c], "a config is a JSON object of fields, not a list"),
    (lambda c: {**c, "n_head": "x"}, "n_head must be an integer, got 'x'"),
    (lambda c: {**c, "n_layer": 2.5}, "n_layer must be an integer, got 2.5"),
    (lambda c: {**c, "bias": "yes"}, "bias must be true or false, got 'yes'"),
    (lambda c: {**c, "dropout": None}, "dropout must be a number, got None"),
    (lambda c: {k: v for k, v in c.items() if k != "n_layer"}, "the config has no n_layer"),
])
def test_a_hand_edited_config_is_one_clear_line(tmp_path, edit, message):
    from numpygpt.errors import UserError
    out = tmp_path / "out"
    folder = checkpoint.save(out, small_model(), step=1)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(UserError, match=message):
        checkpoint.load(out)


def test_odd_files_where_checkpoints_should_be(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    checkpoint.save(out, small_model(), step=1)
    os.remove(out / "checkpoint.json")
    (out / "checkpoint.json").mkdir()  # a folder where the pointer should be
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load(out)
    other = tmp_path / "other"
    checkpoint.save(other, small_model(), step=1)
    step = other / "step-000001"
    shutil.rmtree(step)
    step.write_text("a file, not a folder")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        checkpoint.load(other)
    # A file where the output directory should be: said at the start, not at the first save.
    (tmp_path / "taken").write_text("x")
    assert run_tiny(tmp_path, data_dir, "--steps", "2", out="taken") == 2
    assert "cannot write checkpoints to" in error_line(capsys)


def test_damaged_tensor_files_are_found_by_their_checksums(tmp_path, data_dir, capsys):
    """Random bytes in the weights: sample refuses with one line (not '!!!!!!!!'); damage only
    in the optimizer's state: sample still runs, --resume refuses."""
    assert run_tiny(tmp_path, data_dir, "--steps", "4", "--eval-interval", "2") == 0
    out = tmp_path / "out"
    folder = checkpoint.resolve(out, "latest")
    optimizer_file = folder / "optimizer.safetensors"
    data = bytearray(optimizer_file.read_bytes())
    data[-2000:] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    optimizer_file.write_bytes(bytes(data))
    sample = [sys.executable, str(REPO_ROOT / "sample.py"), "--out-dir", str(out), "--max-new-tokens", "3"]
    assert subprocess.run(sample, capture_output=True, text=True, timeout=120).returncode == 0
    assert run_tiny(tmp_path, data_dir, "--steps", "8", "--resume") == 2
    assert "optimizer.safetensors is damaged" in error_line(capsys)
    model_file = folder / "model.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-2000:] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    model_file.write_bytes(bytes(data))
    done = subprocess.run(sample, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "model.safetensors is damaged" in done.stderr


def test_resume_truncates_metrics_to_the_checkpoint_and_survives_a_torn_line(tmp_path, data_dir):
    assert run_tiny(tmp_path, data_dir, "--steps", "10", "--eval-interval", "5", "--log-interval", "1") == 0
    out = tmp_path / "out"
    metrics = out / "metrics.jsonl"
    # As if the run had logged steps 11 and 12 after its last checkpoint, then died mid-line.
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": 11, "loss": 1.0}) + "\n" + json.dumps({"step": 12, "loss": 1.0}) + "\n")
        f.write('{"step": 13, "lo')
    assert run_tiny(tmp_path, data_dir, "--steps", "15", "--eval-interval", "5", "--log-interval", "1",
                    "--resume") == 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 16))


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "argument --steps: must be an integer 1 or more, got 0"),
    (["--batch-size", "1000000"], "GiB of memory and the machine has"),
    (["--n-embd", "1000000", "--n-head", "1"], "GiB of memory and the machine has"),
])
def test_runs_that_cannot_run_are_refused_at_once(tmp_path, data_dir, capsys, flags, message):
    start = time.time()
    assert run_tiny(tmp_path, data_dir, *flags) == 2
    assert message in error_line(capsys) and time.time() - start < 30


def test_resuming_a_finished_run_says_so(tmp_path, data_dir, capsys):
    assert run_tiny(tmp_path, data_dir, "--steps", "4", "--eval-interval", "2") == 0
    assert run_tiny(tmp_path, data_dir, "--resume") == 2  # steps stays 4
    assert "is at step 4 of a 4-step run already; pass a larger --steps" in error_line(capsys)


def test_other_commands_meet_odd_paths_with_one_line(tmp_path, capsys):
    from numpygpt.commands import main
    text = tmp_path / "text.txt"
    text.write_text("Some text to prepare. " * 50)
    (tmp_path / "a-file").write_text("x")
    assert main(["prepare", str(text), "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file" in error_line(capsys, "numpygpt prepare")
    gpt2_sized = GPT(GPTConfig(vocab_size=50257, block_size=8, n_layer=1, n_head=1, n_embd=8))
    checkpoint.save(tmp_path / "out", gpt2_sized, step=1,
                    tokenizer_files=checkpoint.read_tokenizer_files(REPO_ROOT / "data" / "gpt2"))
    assert main(["export", str(tmp_path / "out"), str(tmp_path / "a-file")]) == 2
    assert "is a file, not a folder" in error_line(capsys, "numpygpt export")
    pytest.importorskip("optuna")
    assert main(["tune", "--data", str(text), "--storage", str(tmp_path / "nowhere" / "x.db")]) == 2
    assert "does not exist" in error_line(capsys, "numpygpt tune")


WRITER = """
import sys
from numpygpt.config import GPTConfig
from numpygpt.model import GPT
from numpygpt.formats import checkpoint
model = GPT(GPTConfig(vocab_size=2000, block_size=64, n_layer=2, n_head=2, n_embd=128))
checkpoint.save(sys.argv[1], model, step=1, tags=["latest", "best"])
print("ready", flush=True)
step = 1
while True:
    step += 1
    model.params.data[:] = step
    # The same step twice, as a Ctrl-C at an evaluation step re-saves it.
    checkpoint.save(sys.argv[1], model, step=step, tags=["latest", "best"] if step % 3 else ["latest"])
    checkpoint.save(sys.argv[1], model, step=step, tags=["latest"])
"""


def test_a_writer_killed_at_random_instants_always_leaves_loadable_checkpoints(tmp_path):
    """Two dozen SIGKILLs at random moments of saving (new steps and steps saved again):
    `latest` and `best` always load whole, and never mix two saves."""
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    proc = None
    for _ in range(24):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        for tag in ("latest", "best"):
            ckpt = checkpoint.load(out, tag)
            weights = ckpt.build_model().params.data
            step = ckpt.train_state["step"]
            assert step == 1 or np.all(weights == step), "a checkpoint mixes two saves"


def test_a_full_disk_while_preparing_shards_is_one_line_and_keeps_what_was_done(tmp_path, monkeypatch, capsys,
                                                                                 data_dir):
    from numpygpt.commands import main
    from numpygpt.data import shards
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"{i}.txt").write_text((data_dir / "the-verdict.txt").read_text())
    real_write = shards.SplitWriter.write
    writes = []

    def full(writer, tokens):
        writes.append(len(tokens))
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(writer.tmp_path()))
        return real_write(writer, tokens)
    monkeypatch.setattr(shards, "BATCH_CHARS", 20_000)
    monkeypatch.setattr(shards.SplitWriter, "write", full)
    out = tmp_path / "shards"
    assert main(["prepare", str(corpus), "--out", str(out), "--shard-tokens", "3000"]) == 2
    line = error_line(capsys, "numpygpt prepare")
    assert "No space left on device writing" in line and "run the same command again to resume" in line
    monkeypatch.setattr(shards.SplitWriter, "write", real_write)
    assert main(["prepare", str(corpus), "--out", str(out), "--shard-tokens", "3000"]) == 0  # resumes
