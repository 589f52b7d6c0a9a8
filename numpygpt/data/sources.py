"""Where data comes from: the files numpygpt ships, downloads, and the cache.

numpygpt ships its small texts and GPT-2's tokenizer files (see data/README.md): in the
repository's `data/` folder, and in an installed copy in `share/numpygpt/` of the Python
environment. `project_file` finds one there, checked against its SHA-256, so the first run
needs no network; only a copy that is missing everywhere is downloaded, and checked, into
the data home.

The data home holds what numpygpt generates (learnt tokenizers, token files) in `cache/`:
$NUMPYGPT_DATA_DIR when set, else the repository's `data/` when run from a checkout, else
~/.cache/numpygpt.
"""
import os
import shutil
import sys
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..formats.atomic import sha256_file

REPOSITORY_DATA = Path(__file__).resolve().parents[2] / "data"
INSTALLED_DATA = Path(sys.prefix) / "share" / "numpygpt"

# name -> (where to download it when it is nowhere on disk, its SHA-256)
PROJECT_FILES = {
    "tinyshakespeare.txt": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    "the-verdict.txt": (
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"),
    "gpt2/encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "gpt2/vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}


def data_home() -> Path:
    """Where generated data and downloads go (see the module's docstring)."""
    if os.environ.get("NUMPYGPT_DATA_DIR"):
        return Path(os.environ["NUMPYGPT_DATA_DIR"])
    if REPOSITORY_DATA.is_dir():
        return REPOSITORY_DATA
    return Path.home() / ".cache" / "numpygpt"


def project_file(name: str, home: Path | None = None) -> Path:
    """The shipped file `name` (a key of PROJECT_FILES), from the first place that holds a copy
    with the right checksum: the repository, the installed copy, the data home. Downloaded
    into the data home only when none does. Raises DataError when that fails too."""
    url, sha256 = PROJECT_FILES[name]
    home = Path(home) if home is not None else data_home()
    for folder in (REPOSITORY_DATA, INSTALLED_DATA, home):
        path = folder / name
        if path.is_file() and sha256_file(path) == sha256:
            return path
    try:
        return download(url, sha256, home / name)
    except OSError as e:  # offline, or the file moved
        raise DataError(f"{name} is missing from numpygpt's data folder ({REPOSITORY_DATA}) and cannot be "
                        f"downloaded ({getattr(e, 'reason', e)}); reinstall numpygpt, or pass a path "
                        "to your own files") from None


def download(url: str, sha256: str, dest: Path, timeout: float = 20.0) -> Path:
    """Fetch url to dest, keeping it only if its checksum is sha256. Raises OSError when the
    network fails, DataError when the checksum is wrong."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        if sha256_file(tmp) != sha256:
            raise DataError(f"the download of {url} has the wrong SHA-256; try again later or pass a local path")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
