"""A training step after the first reuses the memory of the one before (numpygpt.memory): it
takes (almost) no page faults, where fresh memory takes one per page it touches."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STEPS = """
import resource, sys
import numpy as np
from numpygpt.config import GPTConfig
from numpygpt.memory import reuse_freed_memory
from numpygpt.model import GPT
from numpygpt.optim import AdamW

if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
config = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.1)
model, rng = GPT(config), np.random.default_rng(0)
optimizer = AdamW(model.params, lr=1e-3)
ids = rng.integers(0, 512, size=(8, 65))

def step():
    model.zero_grad()
    model.loss(ids[:, :-1], ids[:, 1:], rng)
    model.backward()
    optimizer.step()

for _ in range(3):
    step()
counts = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(counts))  # a one-off (Python growing its own object arenas) is not the step's
"""


def faults_per_step(mode):
    out = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_a_repeated_step_takes_no_page_faults():
    """The fewest faults of five steps after three warm-up ones."""
    fresh, reused = faults_per_step("fresh"), faults_per_step("reuse")
    assert fresh > 200      # the step's arrays over 128 KiB come back as new pages every time
    assert reused < 20, (fresh, reused)
