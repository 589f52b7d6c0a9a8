"""Files that are either whole or absent: how every file numpygpt writes for keeps is written,
and the checksum it is known by.

A file is written under a unique temporary name in its own folder (so the rename below never
crosses file systems and two processes never share a temporary), flushed to disk, renamed
over the final name, and the folder itself is flushed so the rename survives a power cut. A
crash at any instant leaves the old file or the new one, never a part of one; a crash before
the rename leaves only a hidden `.NAME.tmp-*` file, which `remove_stale` clears.
"""
import hashlib
import json
import os
import secrets
from pathlib import Path


def fsync_dir(folder: Path):
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, write, sync_folder: bool = True):
    """Atomically make `path` hold what write(file) writes into an open binary file.

    sync_folder: flush the folder after the rename (False when the caller flushes it once
    after writing many files)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_dir(path.parent)


def write_bytes(path, data: bytes, sync_folder: bool = True):
    write_file(path, lambda f: f.write(data), sync_folder)


def write_json(path, obj, sync_folder: bool = True):
    write_bytes(path, json.dumps(obj, indent=1).encode(), sync_folder)


def sha256_file(path) -> str:
    """The SHA-256 (hex) of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale(folder: Path, pattern: str = ".*.tmp-*"):
    """Delete the temporaries that interrupted writes left in `folder`."""
    for stale in Path(folder).glob(pattern):
        if stale.is_file():
            stale.unlink(missing_ok=True)
