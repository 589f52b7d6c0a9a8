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
from numpygpt.training.threads import ThreadShards

if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
# Large enough for a thread's own arena to need several heaps (64 MB each), which it frees whole
config = GPTConfig(vocab_size=2048, block_size=256, n_layer=2, n_head=2, n_embd=384, dropout=0.1)
model, rng = GPT(config), np.random.default_rng(0)
optimizer = AdamW(model.params, lr=1e-3)
ids = rng.integers(0, 2048, size=(8, 257))
runner = ThreadShards(model, int(sys.argv[2])) if int(sys.argv[2]) > 1 else model

def step():
    model.zero_grad()
    runner.loss(ids[:, :-1], ids[:, 1:], rng)
    runner.backward()
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


def faults_per_step(mode, shards=1):
    out = subprocess.run([sys.executable, "-c", STEPS, mode, str(shards)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[-1])


def test_a_repeated_step_takes_no_page_faults():
    """The fewest faults of five steps after three warm-up ones."""
    fresh, reused = faults_per_step("fresh"), faults_per_step("reuse")
    assert fresh > 200      # the step's arrays over 128 KiB come back as new pages every time
    assert reused < 20, (fresh, reused)


def test_nor_does_a_step_on_the_threads_of_two_shards():
    """Their arrays come from the main heap too, not from arenas that give freed heaps back."""
    assert faults_per_step("reuse", shards=2) < 20
