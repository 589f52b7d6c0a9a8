"""The loss curves of a run, from its metrics.jsonl to loss.png (needs matplotlib)."""
import json
from pathlib import Path


def plot_metrics(out_dir) -> Path | None:
    """Loss curves from out_dir/metrics.jsonl to out_dir/loss.png; None without matplotlib
    or without a logged step."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    out_dir = Path(out_dir)
    rows = []
    for line in (out_dir / "metrics.jsonl").read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a crash: the curve goes without it
            continue
        if isinstance(row, dict) and "step" in row and "loss" in row:
            rows.append(row)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.8, alpha=0.6, label="train (batch)")
    evals = [r for r in rows if "val_loss" in r and "train_loss" in r]
    ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train")
    ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out_dir / "loss.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
