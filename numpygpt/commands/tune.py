"""Search hyperparameters with Optuna (the `tune` extra), stopping weak trials early.

    numpygpt tune --trials 20 --budget-steps 500          # tiny Shakespeare, shakespeare preset
    numpygpt tune --data my.txt --budget-seconds 120 --search lr,warmup,shape --jobs 2

Every trial is judged by validation bits per byte. Run the same command again to continue an
interrupted sweep; at the end it prints the best trials and the `numpygpt train` command of
the best, and writes OUT_DIR/best.json and OUT_DIR/sweep.png.
"""
import argparse
import json
from pathlib import Path

from ..config import PRESETS
from ..errors import SweepError
from ..progress import Progress
from ..training.tune import (PRUNERS, SEARCHABLE, SweepSettings, best_trials, import_optuna, log_line, plot,
                             run_sweep, table, train_command)
from .args import folder, integer, real


def search_names(text: str) -> tuple:
    names = tuple(n.strip().replace("-", "_") for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SEARCHABLE]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown hyperparameter {', '.join(unknown) or text!r}; "
                                         f"choose from {','.join(SEARCHABLE)}")
    return names


def add_arguments(p):
    p.add_argument("--data", metavar="PATH", help="a text file or folder (default: tiny Shakespeare)")
    p.add_argument("--model", default="shakespeare", choices=sorted(PRESETS),
                   help="the preset giving every setting the sweep does not search")
    p.add_argument("--trials", type=integer(1), default=20, metavar="N", help="finished trials the sweep ends with")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-steps", type=integer(1), metavar="N",
                        help="optimizer steps per trial (default: 500 when no budget is given)")
    budget.add_argument("--budget-tokens", type=integer(1), metavar="N", help="training tokens per trial")
    budget.add_argument("--budget-seconds", type=real(above=0), metavar="S", help="seconds of training per trial")
    p.add_argument("--search", type=search_names, default=SEARCHABLE, metavar="NAMES",
                   help=f"comma-separated hyperparameters to search, from {','.join(SEARCHABLE)} (default: all)")
    p.add_argument("--pruner", choices=PRUNERS, default="median", help="how weak trials are stopped early")
    p.add_argument("--reports", type=integer(1), default=8, metavar="N", help="evaluations per trial")
    p.add_argument("--eval-iters", type=integer(1), default=10, metavar="N", help="batches per evaluation")
    p.add_argument("--jobs", type=integer(1), default=1, metavar="N", help="trials run at once, in separate processes")
    p.add_argument("--out-dir", default="sweep", type=folder, metavar="DIR",
                   help="trial metrics, best.json and sweep.png go here")
    p.add_argument("--storage", metavar="FILE", help="the sweep's SQLite file (default: OUT_DIR/sweep.db)")
    p.add_argument("--study-name", default="numpygpt", metavar="NAME", help="the study's name in the storage")
    p.add_argument("--top", type=integer(1), default=5, metavar="N", help="rows in the final table")
    p.add_argument("--seed", type=integer(0), default=1337, metavar="N",
                   help="seeds the sampler and every trial's model and data")


def run(args):
    if args.budget_steps is None and args.budget_tokens is None and args.budget_seconds is None:
        args.budget_steps = 500
    if args.data is not None and not Path(args.data).exists():
        raise SweepError(f"--data {args.data}: no such file or folder")
    import_optuna()
    settings = SweepSettings(
        data=str(Path(args.data).resolve()) if args.data else None, model=args.model, search=args.search,
        budget_steps=args.budget_steps, budget_tokens=args.budget_tokens, budget_seconds=args.budget_seconds,
        reports=args.reports, eval_iters=args.eval_iters, pruner=args.pruner, seed=args.seed)
    try:
        study = run_sweep(settings, args.trials, args.out_dir, args.storage, args.study_name, args.jobs, log_line)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted; run the same command to continue the sweep") from None
    print(table(study, args.top))
    best = best_trials(study, 1)
    out_dir = Path(args.out_dir)
    if best:
        (out_dir / "best.json").write_text(json.dumps(
            {"trial": best[0].number, "val_bpb": best[0].value, "params": best[0].params,
             "user_attrs": best[0].user_attrs, "command": train_command(settings, best[0])}, indent=2) + "\n")
        print(f"\nbest: {train_command(settings, best[0])}")
    figure = plot(study, out_dir / "sweep.png")
    Progress().message(f"sweep.png: {figure}" if figure else "pip install matplotlib for sweep.png")
