"""Shared test configuration: where the test data lives.

The GPT-2 vocabulary and the text corpora are not part of the repository; they sit in
`../shared/` beside the checkout (override with NUMPYGPT_SHARED). Tests that need them take
these fixtures and are skipped, with the reason, when the folder is absent.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("NUMPYGPT_SHARED", REPO_ROOT.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (set NUMPYGPT_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR)


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """Folder with GPT-2's encoder.json and vocab.bpe."""
    return _require(SHARED_DIR / "gpt2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder with tinyshakespeare.txt and the-verdict.txt."""
    return _require(SHARED_DIR / "data")


# CI runs a fixed set of hypothesis examples so a red run can be reproduced exactly;
# locally every run explores new ones.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
