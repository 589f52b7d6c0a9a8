"""Training: the loop and what drives it.

    settings.py   TrainConfig and the defaults of each model preset
    trainer.py    the loop: evaluation, checkpoints (latest and best), exact resume, Ctrl-C, NaN,
                  early stopping
    threads.py    data parallel within a process: each batch in shards, one thread per core
    dist.py       data parallel over MPI, with ZeRO-1
    tune.py       hyperparameter sweeps with Optuna
    plot.py       the loss curves of a run
"""
