"""Shared test configuration: the project's own data in the repository's data/ folder.

`data_dir` holds tiny Shakespeare and The Verdict, `gpt2_dir` GPT-2's encoder.json and
vocab.bpe; both are tracked in git, so no test needs the network or anything outside the
checkout.
"""
import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder with tinyshakespeare.txt and the-verdict.txt."""
    return DATA_DIR


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """Folder with GPT-2's encoder.json and vocab.bpe."""
    return DATA_DIR / "gpt2"


# CI runs a fixed set of hypothesis examples so a red run can be reproduced exactly;
# locally every run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
