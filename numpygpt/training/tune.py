"""Hyperparameter sweeps with early stopping: `numpygpt tune --trials 20 --budget-steps 500`.

Each trial trains a fresh model on the same data with hyperparameters that Optuna's TPE sampler
proposes (learning rate, warmup, weight decay, dropout, batch size, depth/width, vocabulary
size), evaluating every budget/--reports steps. The quality measured is validation **bits per
byte**, so trials with different tokenizers compare fairly. A pruner stops a trial whose curve
falls behind the others at the same step (`median`, or `halving`: successive halving), which
spends the budget on the promising ones.

Budget, the same for every trial: `--budget-steps S` trains S optimizer steps (the learning-rate
schedule spans S), `--budget-tokens N` N training tokens (S = N / tokens per step, so a bigger
batch gets fewer steps), `--budget-seconds T` as many steps as fit in T seconds of this machine
(timed on a few steps first; a slow model gets fewer steps).

Every trial and every intermediate evaluation is stored in a SQLite file (--storage, default
OUT/sweep.db). Run the same command again and an interrupted sweep continues: finished trials
are kept, the trial that was cut off is run again. `--jobs J` runs J trials at once in separate
processes that share the storage, each with cores/J threads. At the end: a table of the best
trials, the `numpygpt train` command of the best, OUT/best.json and OUT/sweep.png (validation bits/byte
against each hyperparameter; with matplotlib). Optuna is the optional extra `tune`.
"""
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import SweepError

SEARCHABLE = ("lr", "warmup", "weight_decay", "dropout", "batch_size", "shape", "vocab_size")
PRUNERS = ("median", "halving", "none")
PROBE_STEPS = 3  # steps timed to size a --budget-seconds trial (after one untimed step)

# Depth x width choices; heads keep a head size of 48-64 (numbers are what the sweep reads).
DEPTHS = (2, 3, 4, 6)
WIDTHS = {128: 2, 192: 4, 256: 4, 384: 6}  # n_embd -> n_head
BATCH_SIZES = (8, 12, 16, 24, 32)
VOCAB_SIZES = (1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class SweepSettings:
    """What defines a sweep. Stored with the study: resuming with other settings is an error."""
    data: str | None
    model: str = "shakespeare"
    search: tuple = SEARCHABLE
    budget_steps: int | None = None
    budget_tokens: int | None = None
    budget_seconds: float | None = None
    reports: int = 8          # evaluations per trial (the points the pruner compares)
    eval_iters: int = 10      # batches per evaluation
    pruner: str = "median"
    seed: int = 1337

    def to_json(self) -> dict:
        return {**asdict(self), "search": list(self.search)}


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError("optuna is not installed: pip install 'numpygpt[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    return optuna


# -- one trial ---------------------------------------------------------------------------------

def suggest(trial, search) -> dict:
    """The trial's hyperparameters: drawn for the names in `search`, absent (preset default) else."""
    p = {}
    if "lr" in search:
        p["lr"] = trial.suggest_float("lr", 1e-4, 5e-3, log=True)
    if "warmup" in search:  # a fraction of the trial's steps, so it carries over to other budgets
        p["warmup_fraction"] = trial.suggest_float("warmup_fraction", 0.0, 0.2)
    if "weight_decay" in search:
        p["weight_decay"] = trial.suggest_float("weight_decay", 0.0, 0.3)
    if "dropout" in search:
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.3)
    if "batch_size" in search:
        p["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
    if "shape" in search:
        p["n_layer"] = trial.suggest_categorical("n_layer", DEPTHS)
        p["n_embd"] = trial.suggest_categorical("n_embd", tuple(WIDTHS))
    if "vocab_size" in search:
        p["vocab_size"] = trial.suggest_categorical("vocab_size", VOCAB_SIZES)
    return p


def baseline(settings: SweepSettings) -> dict:
    """The preset's own values of the searched hyperparameters: a new sweep's first trial, so
    every other trial is seen against what the preset does now."""
    from ..config import preset
    from .settings import TrainConfig, train_preset
    model, train = preset(settings.model), {**TrainConfig().__dict__, **train_preset(settings.model)}
    values = {"lr": train["lr"], "warmup_fraction": train["warmup_steps"] / TrainConfig().steps,
              "weight_decay": train["weight_decay"], "dropout": model.dropout, "batch_size": train["batch_size"],
              "n_layer": model.n_layer, "n_embd": model.n_embd, "vocab_size": model.vocab_size}
    names = {"warmup": ["warmup_fraction"], "shape": ["n_layer", "n_embd"]}
    within = {"lr": lambda v: 1e-4 <= v <= 5e-3, "warmup_fraction": lambda v: v <= 0.2,
              "weight_decay": lambda v: v <= 0.3, "dropout": lambda v: v <= 0.3,
              "batch_size": BATCH_SIZES.__contains__, "n_layer": DEPTHS.__contains__,
              "n_embd": WIDTHS.__contains__, "vocab_size": VOCAB_SIZES.__contains__}
    # A preset value outside the search space (the tiny preset's width 64) is left to the sampler.
    return {k: values[k] for name in settings.search for k in names.get(name, [name]) if within[k](values[k])}


def trial_configs(settings: SweepSettings, hp: dict, tokens_per_s: float | None = None):
    """(GPTConfig, TrainConfig) of a trial from its hyperparameters and the budget. For a
    --budget-seconds trial, `tokens_per_s` (measured) turns seconds into steps."""
    from ..config import preset
    from .settings import TrainConfig, train_preset

    model_config = preset(settings.model).with_(
        dropout=hp.get("dropout"), n_layer=hp.get("n_layer"), n_embd=hp.get("n_embd"),
        n_head=WIDTHS.get(hp.get("n_embd")), vocab_size=hp.get("vocab_size"))
    defaults = train_preset(settings.model)
    defaults.pop("tokenizer", None)
    batch_size = hp.get("batch_size", defaults.get("batch_size", 16))
    tokens_per_step = batch_size * model_config.block_size
    if settings.budget_steps is not None:
        steps = settings.budget_steps
    elif settings.budget_tokens is not None:
        steps = settings.budget_tokens // tokens_per_step
    else:
        steps = int(settings.budget_seconds * tokens_per_s / tokens_per_step) if tokens_per_s else PROBE_STEPS + 1
    steps = max(steps, 1)
    warmup = defaults.get("warmup_steps", 0) if "warmup_fraction" not in hp else round(hp["warmup_fraction"] * steps)
    config = TrainConfig(**{**defaults, "steps": steps, "batch_size": batch_size,
                            "block_size": model_config.block_size, "warmup_steps": min(warmup, steps),
                            "lr": hp.get("lr", defaults.get("lr", 1e-3)),
                            "weight_decay": hp.get("weight_decay", 0.1),
                            "eval_interval": max(1, steps // settings.reports),
                            "eval_iters": settings.eval_iters, "sample_tokens": 0, "seed": settings.seed})
    return model_config, config


class Datasets:
    """Tokenized data per vocabulary size, built once per process (the trained tokenizers and
    token files are cached on disk by numpygpt.data, so other processes find them ready)."""

    def __init__(self, data):
        self.data = data
        self.cache = {}

    def get(self, model_name: str, vocab_size: int):
        from ..data import check_long_enough, load_dataset
        from .settings import train_preset
        if vocab_size not in self.cache:
            dataset = load_dataset(self.data, train_preset(model_name).get("tokenizer", "train"), vocab_size)
            check_long_enough(dataset, 1)
            self.cache[vocab_size] = dataset
        return self.cache[vocab_size]


def measure_tokens_per_s(model_config, config, dataset) -> float:
    """Training tokens/s of this configuration on this machine: one untimed step (Numba
    compiles, buffers come in), then PROBE_STEPS timed ones, on a throwaway model."""
    from ..model import GPT
    from .trainer import Trainer

    probe_config = replace(config, steps=PROBE_STEPS + 1, eval_iters=1)
    trainer = Trainer(GPT(model_config, seed=config.seed), dataset, probe_config, out_dir=os.devnull,
                      checkpoints=False)
    trainer.train_step()
    start = time.perf_counter()
    for _ in range(PROBE_STEPS):
        trainer.train_step()
    return PROBE_STEPS * config.tokens_per_step / (time.perf_counter() - start)


def objective(trial, settings: SweepSettings, datasets: Datasets, out_dir: Path) -> float:
    """Train one trial; report validation bits/byte at every evaluation (the pruner may stop
    it there); return the final validation bits/byte."""
    import optuna

    from ..config import preset
    from ..errors import TrainingError
    from ..model import GPT
    from .trainer import Trainer

    WorkerStop.check()  # before drawing hyperparameters: this trial has nothing to run again
    hp = suggest(trial, settings.search)
    vocab_size = hp.get("vocab_size", preset(settings.model).vocab_size)
    dataset = datasets.get(settings.model, vocab_size)
    hp["vocab_size"] = _n_vocab(dataset)  # a small text may give fewer tokens than asked
    tokens_per_s = None
    if settings.budget_seconds is not None:
        model_config, config = trial_configs(settings, hp)
        tokens_per_s = measure_tokens_per_s(model_config, config, dataset)
    model_config, config = trial_configs(settings, hp, tokens_per_s)

    trial_dir = out_dir / f"trial-{trial.number:04d}"
    shutil.rmtree(trial_dir, ignore_errors=True)  # left by a sweep whose storage was deleted

    evaluations = []

    def report(step, evaluation):
        # Reported by evaluation number, not step: under a token or time budget trials run
        # different step counts, and the pruner must compare them at the same fraction of it.
        evaluations.append(step)
        trial.report(evaluation["val_bpb"], len(evaluations))
        if trial.should_prune():
            trial.set_user_attr("stopped_at", step)
            raise optuna.TrialPruned(f"pruned at step {step}: {evaluation['val_bpb']:.4f} bits/byte")

    model = GPT(model_config, seed=config.seed)
    trial.set_user_attr("steps", config.steps)
    trial.set_user_attr("parameters", model.num_parameters())
    with open(os.devnull, "w") as quiet:
        trainer = Trainer(model, dataset, config, trial_dir, on_eval=report, checkpoints=False, stream=quiet)
        start = time.perf_counter()
        try:
            final = trainer.run()
        except KeyboardInterrupt:  # Optuna records the trial as failed; a resumed sweep reruns it
            trial.set_user_attr("interrupted", True)
            raise
        except TrainingError as e:  # a diverged trial is a result too: stopped early, like a pruned one
            trial.set_user_attr("diverged", str(e).split(";")[0])
            raise optuna.TrialPruned(str(e)) from None
        finally:
            seconds = time.perf_counter() - start
            trial.set_user_attr("seconds", round(seconds, 2))
            trial.set_user_attr("seconds_per_step", round(seconds / max(trainer.step, 1), 4))
    trial.set_user_attr("val_loss", final["val_loss"])
    return final["val_bpb"]


def _n_vocab(dataset) -> int:
    from ..data import load_tokenizer
    return load_tokenizer(dataset.tokenizer_dir).n_vocab


# -- the sweep ---------------------------------------------------------------------------------

def make_pruner(optuna, name: str):
    # "Steps" here are evaluation numbers 1..reports (see objective).
    if name == "median":  # stop a trial below the median of earlier ones, once two have finished
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0, n_min_trials=1)
    if name == "halving":  # keep the best third at evaluations 1, 3, 9, ...
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_database_file(database: Path):
    """The sweep's SQLite file exists as one, or can be made: a folder or a file of other
    content there is refused before Optuna would fail on it in many lines."""
    if not database.parent.is_dir():
        raise SweepError(f"--storage {database}: the folder {database.parent} does not exist")
    if database.is_dir():
        raise SweepError(f"--storage {database} is a folder; name the sweep's database file")
    if database.exists():
        try:
            with open(database, "rb") as f:
                header = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise SweepError(f"--storage {database}: cannot read it ({e.strerror or e})") from None
        if header and header != SQLITE_HEADER:
            raise SweepError(f"--storage {database} is not a SQLite database; name a new file or an "
                             "earlier sweep's")


def open_study(settings: SweepSettings, storage_url: str, study_name: str, worker: int = 0):
    """Create the study, or load it to continue; a stored sweep with other settings is refused.
    Each parallel worker seeds its sampler differently, or they would propose the same trials."""
    optuna = import_optuna()
    database = Path(storage_url.removeprefix("sqlite:///"))
    if storage_url.startswith("sqlite:///"):
        check_database_file(database)
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's own dependency
    sampler = optuna.samplers.TPESampler(seed=settings.seed + worker, n_startup_trials=4)
    try:
        study = optuna.create_study(storage=storage_url, study_name=study_name, direction="minimize",
                                    sampler=sampler, pruner=make_pruner(optuna, settings.pruner),
                                    load_if_exists=True)
    except SQLAlchemyError as e:
        raise SweepError(f"--storage {database}: cannot open it as the sweep's database "
                         f"({getattr(e, 'orig', None) or type(e).__name__})") from None
    stored = study.user_attrs.get("settings")
    if stored is not None and stored != settings.to_json() and only_failed(study, optuna):
        # A sweep whose every trial failed (on data that would not load, say) holds no result:
        # one with other settings replaces it rather than being refused.
        optuna.delete_study(study_name=study_name, storage=storage_url)
        study = optuna.create_study(storage=storage_url, study_name=study_name, direction="minimize",
                                    sampler=sampler, pruner=make_pruner(optuna, settings.pruner))
        stored = None
    if stored is None:
        study.set_user_attr("settings", settings.to_json())
    elif stored != settings.to_json():
        changed = sorted(k for k in stored if stored[k] != settings.to_json().get(k))
        raise SweepError(f"{storage_url.removeprefix('sqlite:///')} holds study {study_name!r} with other "
                         f"settings ({', '.join(changed)}); use the same flags to continue it, or another "
                         "--storage / --study-name")
    return study


def only_failed(study, optuna) -> bool:
    """Whether the study has trials and each one failed or is still waiting to run: nothing
    finished, nothing running."""
    State = optuna.trial.TrialState
    states = {t.state for t in study.get_trials(deepcopy=False)}
    return State.FAIL in states and states <= {State.FAIL, State.WAITING}


def requeue_interrupted(study) -> int:
    """Trials cut off by a sweep that stopped: left RUNNING (killed) or failed with the
    "interrupted" mark (Ctrl-C). Mark the first kind failed, and queue the hyperparameters of
    both again, once, so the resumed sweep reruns exactly those. (Only one sweep command may use
    a storage at a time; its own --jobs workers start after this.)"""
    import optuna
    State = optuna.trial.TrialState
    requeued = set(study.user_attrs.get("requeued", []))
    cut_off = [t for t in study.get_trials(deepcopy=False, states=(State.RUNNING, State.FAIL))
               if t.number not in requeued and (t.state == State.RUNNING or t.user_attrs.get("interrupted"))]
    storage = study._storage  # the study's own storage object; its methods are Optuna's public API
    for t in cut_off:
        if t.state == State.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, t.number)
            storage.set_trial_state_values(trial_id, State.FAIL)
        study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
    study.set_user_attr("requeued", sorted(requeued | {t.number for t in cut_off}))
    return len(cut_off)


def finished(study) -> int:
    import optuna
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def work(settings: SweepSettings, storage_url: str, study_name: str, out_dir: Path, trials: int,
         threads: int | None = None, log=None, worker: int = 0):
    """One worker: run trials until the study holds `trials` finished ones."""
    if threads:  # before NumPy's BLAS or Numba start their pools in this process
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(threads)
    optuna = import_optuna()
    study = open_study(settings, storage_url, study_name, worker)
    datasets = Datasets(settings.data)

    def after(study, frozen):
        if log is not None:
            log(describe(frozen))
        WorkerStop.check()
    stop_at_total = optuna.study.MaxTrialsCallback(
        trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    remaining = trials - finished(study)
    WorkerStop.check()  # a Ctrl-C while this worker started up
    if remaining > 0:
        study.optimize(lambda t: objective(t, settings, datasets, out_dir), n_trials=remaining,
                       callbacks=[after, stop_at_total])


class WorkerStop:
    """Ctrl-C in a --jobs worker, outside a trial's training loop (which has its own handler).
    The handler only takes note, and the worker stops at the next trial boundary: an interrupt
    raised wherever the signal lands could land in a ctypes callback (Numba compiling a
    kernel), which prints the KeyboardInterrupt and drops it, and the worker would train on."""

    requested = False

    @classmethod
    def install(cls):
        signal.signal(signal.SIGINT, cls._note)

    @classmethod
    def _note(cls, signum, frame):
        cls.requested = True

    @classmethod
    def check(cls):
        if cls.requested:
            raise KeyboardInterrupt


def _worker_main(args):
    WorkerStop.install()
    try:
        work(*args)
    except KeyboardInterrupt:
        pass


def stop_workers(workers, repeat_every: float = 5.0):
    """Pass Ctrl-C on to the workers, again every `repeat_every` seconds while any is alive:
    one can still be lost, in a trial whose last evaluation pruned it (the pruning ends that
    trial, not the worker). A worker is never killed: it ends at a step or trial boundary."""
    while any(w.is_alive() for w in workers):
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGINT)
        for w in workers:
            w.join(timeout=repeat_every / len(workers))


def run_sweep(settings: SweepSettings, trials: int, out_dir, storage: str | None = None,
              study_name: str = "numpygpt", jobs: int = 1, log=print):
    """Run (or continue) a sweep until it holds `trials` finished trials. Returns the study."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot write to --out-dir {out_dir}: {e.strerror or e}") from None
    storage_url = "sqlite:///" + str(Path(storage) if storage else out_dir / "sweep.db")
    study = open_study(settings, storage_url, study_name)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(baseline(settings), user_attrs={"baseline": True})
    done = finished(study)
    rerun = requeue_interrupted(study)
    if done or rerun:
        log(f"continuing {study_name!r}: {done} trials finished" + (f", {rerun} interrupted one(s) to run again"
                                                                   if rerun else ""))
    if done >= trials:
        return study
    if jobs == 1:
        work(settings, storage_url, study_name, out_dir, trials, log=log)
    else:
        from ..config import preset
        # Tokenizers and token files made once here, rather than raced for by the workers.
        datasets = Datasets(settings.data)
        for vocab_size in VOCAB_SIZES if "vocab_size" in settings.search else (preset(settings.model).vocab_size,):
            datasets.get(settings.model, vocab_size)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")  # fresh interpreters: thread counts take effect
        workers = [context.Process(target=_worker_main,
                                   args=((settings, storage_url, study_name, out_dir, trials, threads, log_line, i),))
                   for i in range(jobs)]
        for w in workers:
            w.start()
        try:
            for w in workers:
                w.join()
        except KeyboardInterrupt:
            # A terminal's Ctrl-C reaches the workers too; a SIGINT sent to this process alone
            # (kill -INT) must be passed on, or they would train on and this process wait.
            stop_workers(workers)
            raise
        failed = [w.exitcode for w in workers if w.exitcode]
        if failed:
            raise SweepError(f"{len(failed)} of {jobs} sweep workers failed (exit codes {failed}); "
                             "the storage keeps what finished: run the same command to continue")
    return study


def log_line(text: str):
    """How the workers of a --jobs sweep report (a module-level function: spawned processes
    receive it by name)."""
    print(text, file=sys.stderr, flush=True)


# -- reporting ----------------------------------------------------------------------------------

def describe(t) -> str:
    """One line for a finished trial."""
    hp = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    if t.state.name == "COMPLETE":
        result = f"{t.value:.4f} bits/byte"
    elif "diverged" in t.user_attrs:
        result = "diverged"
    else:
        last = max(t.intermediate_values.items(), default=(0, math.nan))[1]
        result = f"pruned at step {t.user_attrs.get('stopped_at')} ({last:.4f} bits/byte)"
    return f"trial {t.number}: {result} in {t.user_attrs.get('seconds', 0):.0f} s | {hp}"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def best_trials(study, top: int) -> list:
    import optuna
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.value)[:top]


def table(study, top: int = 5) -> str:
    """The best finished trials as a Markdown table."""
    rows = best_trials(study, top)
    if not rows:
        return "no trial has finished its budget yet"
    names = list(dict.fromkeys(k for t in rows for k in t.params))
    head = ["trial", "val bits/byte", "val loss", "steps", "s/step", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in rows:
        cells = [t.number, f"{t.value:.4f}", f"{t.user_attrs.get('val_loss', math.nan):.4f}",
                 t.user_attrs.get("steps"), t.user_attrs.get("seconds_per_step"),
                 *(_fmt(t.params.get(k, "")) for k in names)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def train_command(settings: SweepSettings, trial) -> str:
    """The `numpygpt train` command that trains the trial's configuration (for the trial's step count)."""
    hp, steps = trial.params, trial.user_attrs.get("steps")
    flags = [f"--model {settings.model}"] + ([f"--data {settings.data}"] if settings.data else [])
    flags.append(f"--steps {steps}")
    for name in ("lr", "weight_decay", "dropout", "batch_size", "n_layer", "n_embd", "vocab_size"):
        if name in hp:
            flags.append(f"--{name.replace('_', '-')} {_fmt(hp[name])}")
    if "n_embd" in hp:
        flags.append(f"--n-head {WIDTHS[hp['n_embd']]}")
    if "warmup_fraction" in hp:
        flags.append(f"--warmup-steps {round(hp['warmup_fraction'] * steps)}")
    return "numpygpt train " + " ".join(flags)


def plot(study, path) -> Path | None:
    """Validation bits/byte against each hyperparameter (finished trials; pruned ones at their
    last evaluation, hollow). None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    import optuna
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                       optuna.trial.TrialState.PRUNED))
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    if not names:
        return None
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for state, style in (("COMPLETE", {"color": "C0"}), ("PRUNED", {"facecolors": "none", "edgecolors": "C1"})):
            pts = [(t.params[name], t.value if state == "COMPLETE" else list(t.intermediate_values.values())[-1])
                   for t in trials if t.state.name == state and name in t.params and
                   (state == "COMPLETE" or t.intermediate_values)]
            if pts:
                label = "finished" if state == "COMPLETE" else "pruned (last evaluation)"
                ax.scatter(*zip(*pts), s=22, label=label, **style)
        if name == "lr":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels would overlap
        ax.set_xlabel(name)
        ax.set_ylabel("val bits/byte")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
