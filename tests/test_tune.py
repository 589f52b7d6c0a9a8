"""The hyperparameter sweep: trials run, weak ones are pruned, an interrupted sweep resumes from
its storage file, the best trial's command trains, and bad arguments give one line."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from numpygpt.training import tune
from tests.conftest import REPO_ROOT

optuna = pytest.importorskip("optuna")
TrialState = optuna.trial.TrialState


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def isolated_cache(cache_dir, monkeypatch):
    """Tokenizers and token files go to one temporary folder for these tests."""
    monkeypatch.setenv("NUMPYGPT_DATA_DIR", str(cache_dir))


@pytest.fixture
def text_file(data_dir):
    return str(data_dir / "the-verdict.txt")


def settings_for(text_file, **changes):
    base = dict(data=text_file, model="tiny", search=("lr",), budget_steps=20, reports=4, eval_iters=2)
    return tune.SweepSettings(**{**base, **changes})


def run(args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "numpygpt", "tune", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def states(study):
    return [t.state for t in study.get_trials()]


def test_trial_configs_follow_the_budget(text_file):
    hp = {"lr": 2e-3, "batch_size": 8, "n_layer": 3, "n_embd": 192, "warmup_fraction": 0.1, "dropout": 0.2}
    model, config = tune.trial_configs(settings_for(text_file, budget_steps=100), hp)
    assert (model.n_layer, model.n_embd, model.n_head, model.dropout) == (3, 192, 4, 0.2)
    assert (config.steps, config.batch_size, config.lr, config.warmup_steps) == (100, 8, 2e-3, 10)
    assert config.eval_interval == 100 // 4 and config.sample_tokens == 0
    # A token budget: a batch of 8 x 64 tokens -> 10,240 / 512 = 20 steps.
    _, config = tune.trial_configs(settings_for(text_file, budget_steps=None, budget_tokens=10_240), hp)
    assert config.steps == 20
    # A time budget: 3 s at a measured 1,024 tokens/s is 3,072 tokens = 6 steps of 512.
    _, config = tune.trial_configs(settings_for(text_file, budget_steps=None, budget_seconds=3.0), hp, 1024.0)
    assert config.steps == 6


def test_sweep_prunes_a_weak_trial_and_resumes_from_its_storage(tmp_path, text_file):
    settings = settings_for(text_file)
    storage = "sqlite:///" + str(tmp_path / "sweep.db")
    study = tune.open_study(settings, storage, "t")
    for lr in (3e-3, 2e-3, 1e-4):  # the last learns nothing: below the median at its first evaluation
        study.enqueue_trial({"lr": lr})
    lines = []
    study = tune.run_sweep(settings, 3, tmp_path, storage=str(tmp_path / "sweep.db"), study_name="t",
                           log=lines.append)
    assert states(study) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    pruned = study.trials[2]
    assert list(pruned.intermediate_values) == [1] and pruned.user_attrs["stopped_at"] == 5
    assert "pruned at step 5" in lines[2]
    first = study.trials[0]
    assert 0 < first.value < 10 and first.user_attrs["steps"] == 20
    assert len(first.intermediate_values) == 4  # one report per evaluation
    metrics = [json.loads(line) for line in (tmp_path / "trial-0000" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_bpb"] == pytest.approx(first.value)
    assert not list(tmp_path.glob("trial-0000/step-*"))  # trials keep metrics, not checkpoints

    # The same sweep asked for 4 trials: the 3 stored ones are kept, one more runs.
    again = tune.run_sweep(settings, 4, tmp_path, storage=str(tmp_path / "sweep.db"), study_name="t",
                           log=lines.append)
    assert len(again.trials) == 4 and tune.finished(again) == 4
    assert again.trials[0].value == first.value and again.trials[0].datetime_complete == first.datetime_complete
    assert any("continuing 't': 3 trials finished" in line for line in lines)


def test_an_interrupted_trial_runs_again_on_resume(tmp_path, text_file):
    settings = settings_for(text_file)
    db = str(tmp_path / "sweep.db")
    study = tune.open_study(settings, "sqlite:///" + db, "t")
    cut_off = study.ask()                 # a trial left RUNNING, as by a killed sweep
    cut_off.suggest_float("lr", 1e-4, 5e-3, log=True)
    lr = cut_off.params["lr"]
    study = tune.run_sweep(settings, 1, tmp_path, storage=db, study_name="t", log=lambda s: None)
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    rerun = study.trials[1]
    assert rerun.params["lr"] == lr and rerun.user_attrs["rerun_of"] == 0


def test_ctrl_c_stops_the_sweep_and_the_same_command_reruns_the_cut_off_trial(tmp_path, text_file, monkeypatch):
    settings = settings_for(text_file)
    db = str(tmp_path / "sweep.db")

    real_objective = tune.objective
    calls = []

    def objective(trial, *args):
        calls.append(trial.number)
        if len(calls) == 2:       # the second trial is cut off part way
            trial.suggest_float("lr", 1e-4, 5e-3, log=True)
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt
        return real_objective(trial, *args)

    monkeypatch.setattr(tune, "objective", objective)
    with pytest.raises(KeyboardInterrupt):
        tune.run_sweep(settings, 3, tmp_path, storage=db, study_name="t", log=lambda s: None)
    monkeypatch.setattr(tune, "objective", real_objective)
    study = tune.run_sweep(settings, 3, tmp_path, storage=db, study_name="t", log=lambda s: None)
    assert states(study)[:2] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[2].user_attrs["rerun_of"] == 1
    assert study.trials[2].params == study.trials[1].params
    assert tune.finished(study) == 3
    # A later resume does not queue the same cut-off trial a second time.
    again = tune.run_sweep(settings, 3, tmp_path, storage=db, study_name="t", log=lambda s: None)
    assert len(again.trials) == len(study.trials)


def test_resuming_with_other_settings_is_refused(tmp_path, text_file):
    storage = "sqlite:///" + str(tmp_path / "sweep.db")
    tune.open_study(settings_for(text_file), storage, "t")
    with pytest.raises(tune.SweepError, match=r"other settings \(budget_steps\)"):
        tune.open_study(settings_for(text_file, budget_steps=30), storage, "t")


def test_a_sweep_whose_every_trial_failed_is_replaced_by_one_with_other_settings(tmp_path, text_file):
    """Say its data would not load: it holds no result, so mended flags start a new sweep there."""
    import optuna
    storage = "sqlite:///" + str(tmp_path / "sweep.db")
    study = tune.open_study(settings_for(text_file), storage, "t")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study = tune.open_study(settings_for(text_file, budget_steps=30), storage, "t")
    assert study.get_trials() == [] and study.user_attrs["settings"]["budget_steps"] == 30
    study.tell(study.ask(), 1.0)  # a finished trial: other settings are refused again
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(tune.SweepError, match=r"other settings \(budget_steps\)"):
        tune.open_study(settings_for(text_file, budget_steps=40), storage, "t")


def test_cli_sweep_in_two_processes_writes_table_plot_and_a_command_that_trains(tmp_path, text_file):
    out = tmp_path / "sweep"
    result = run(["--data", text_file, "--model", "tiny", "--trials", "2", "--budget-steps", "10",
                  "--reports", "2", "--eval-iters", "2", "--search", "lr,dropout,batch_size",
                  "--jobs", "2", "--out-dir", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| trial | val bits/byte |" in result.stdout
    best = json.loads((out / "best.json").read_text())
    assert best["val_bpb"] > 0 and set(best["params"]) == {"lr", "dropout", "batch_size"}
    assert best["command"] in result.stdout
    # Workers seed their samplers apart: the two trials are not the same proposal.
    with_params = [line for line in result.stderr.splitlines() if line.startswith("trial ")]
    # A new sweep starts from the preset's own values (tiny: lr 1e-3, dropout 0, batch 8).
    assert any(line.startswith("trial 0:") and line.endswith("| lr=0.001, dropout=0, batch_size=8")
               for line in with_params)
    assert len(with_params) >= 2 and len({line.split("|")[1] for line in with_params}) == len(with_params)
    try:
        import matplotlib  # noqa: F401
        assert (out / "sweep.png").stat().st_size > 0
    except ImportError:
        pass
    # The best trial's command is a valid `numpygpt train` command line that trains the same thing.
    argv = shlex.split(best["command"])[2:] + ["--out-dir", str(tmp_path / "run"), "--sample-tokens", "0"]
    train = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *argv], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, env=_env())
    assert train.returncode == 0, train.stderr
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 10


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "--trials: must be an integer 1 or more, got 0"),
    (["--search", "lr,colour"], "unknown hyperparameter 'colour'"),
    (["--budget-steps", "5", "--budget-seconds", "3"], "not allowed with argument"),
    (["--budget-seconds", "soon"], "expected a number, got 'soon'"),
    (["--pruner", "random"], "invalid choice: 'random'"),
    (["--data", "no/such/file.txt"], "--data no/such/file.txt: no such file or folder"),
])
def test_bad_arguments_give_one_line(tmp_path, args, message):
    result = run(args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("numpygpt tune: error: ")
    assert message in result.stderr


def test_places_a_sweep_cannot_use_are_one_line(tmp_path, text_file, capsys):
    """Folders and files where the sweep's output or database cannot go, refused before
    Optuna would fail on them in many lines; the files there are left as they were."""
    from numpygpt.commands import main
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "garbage.db").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "a-folder").mkdir()
    for flags, message in [(["--out-dir", str(tmp_path / "a-file")], "cannot write to --out-dir"),
                           (["--storage", str(tmp_path / "garbage.db")], "garbage.db is not a SQLite database"),
                           (["--storage", str(tmp_path / "a-folder")], "a-folder is a folder"),
                           (["--storage", str(tmp_path / "no" / "sweep.db")], "the folder"),
                           (["--storage", "/proc/sweep.db"], "cannot open it as the sweep's database")]:
        out = ["--out-dir", str(tmp_path / "sweep")] if flags[0] != "--out-dir" else []
        assert main(["tune", "--data", text_file, "--model", "tiny", "--trials", "1", "--budget-steps", "2",
                     *out, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("numpygpt tune: error: ") and message in err[0], err
    assert (tmp_path / "a-file").read_text() == "mine"
    assert (tmp_path / "garbage.db").read_bytes() == bytes(range(256)) * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="finds the worker processes through Linux's /proc")
def test_sigint_to_the_sweep_process_alone_stops_its_workers(tmp_path, text_file):
    """`kill -INT` of the --jobs parent (not its whole process group, as a terminal's Ctrl-C
    would be) is passed on: the command exits with 130 and no worker trains on."""
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "numpygpt", "tune", "--data", text_file, "--model", "tiny",
                             "--trials", "50", "--budget-steps", "3000", "--reports", "2", "--eval-iters", "2",
                             "--search", "lr", "--jobs", "2", "--out-dir", str(out)],
                            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # as a terminal starts it, even when this runs as a background job (which ignores SIGINT)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.glob("trial-*/metrics.jsonl")) and time.time() < deadline:  # trials are training
        time.sleep(0.2)
    children = [int(pid) for pid in
                (open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split())]
    assert children
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    deadline = time.time() + 30
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children)


def test_an_interrupt_in_a_ctypes_callback_is_not_lost_by_a_worker(monkeypatch):
    """Numba compiles through ctypes callbacks; a KeyboardInterrupt raised inside one is dropped
    (printed as "Exception ignored"). A worker's handler only takes note, and the note stops it."""
    import ctypes
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    callback = ctypes.CFUNCTYPE(None)(lambda: os.kill(os.getpid(), signal.SIGINT) or time.sleep(0.01))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        callback()  # Python's own handler: the interrupt is raised in the callback and lost
        assert dropped == [KeyboardInterrupt]
        monkeypatch.setattr(tune.WorkerStop, "requested", False)
        tune.WorkerStop.install()
        callback()
        assert dropped == [KeyboardInterrupt] and tune.WorkerStop.requested
        with pytest.raises(KeyboardInterrupt):
            tune.WorkerStop.check()
    finally:
        signal.signal(signal.SIGINT, previous)


def _loses_the_first_interrupt(ready):
    seen = []
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0) if seen else seen.append(1))
    ready.set()
    while True:
        time.sleep(0.01)


def test_stop_workers_repeats_the_interrupt_until_the_workers_end():
    import multiprocessing
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    worker = context.Process(target=_loses_the_first_interrupt, args=(ready,))
    worker.start()
    assert ready.wait(30)
    start = time.perf_counter()
    tune.stop_workers([worker], repeat_every=0.3)
    assert not worker.is_alive() and worker.exitcode == 0
    assert time.perf_counter() - start >= 0.3  # the second interrupt ended it
