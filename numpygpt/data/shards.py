"""Token shards: a corpus larger than memory tokenized once, on every core, into fixed-size
files that training memory-maps; an interrupted preparation resumes where it stopped.

    numpygpt prepare INPUT --out DIR [--tokenizer gpt2|FOLDER]
    numpygpt train --data DIR

    DIR/manifest.json      settings, input files, each finished shard with the input position
                           reached when it was finished; "complete" once all input is done
    DIR/tokenizer/         the vocabulary the shards were made with
    DIR/train_000000.bin   a 64-byte header (HEADER), then shard_tokens token ids, uint16
    DIR/train_000001.bin   (uint32 for vocabularies over 65,536), little-endian; the last
    DIR/val_000000.bin     shard of each split holds the rest

A document (see numpygpt.corpus) goes to validation when a hash of (seed, its index) falls
below val_fraction, else to training. Within a split the documents are joined with
<|endoftext|> between them into one token stream, which the shards cut into equal parts:
`ShardedTokens` reads the stream back across shard boundaries.

Crash safety: a shard is written to NAME.tmp, gets its header when full, is recorded in the
manifest (itself replaced atomically) with the input position reached and the length of the
unfinished shards, and only then renamed to NAME. Running the same command again finishes any
rename, cuts the unfinished shards back to their recorded length and reads the input on from
the recorded position, which gives the same bytes as a run never interrupted.
"""
import functools
import hashlib
import itertools
import json
import os
import shutil
import struct
import time
from bisect import bisect_right
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bpe.files import find_vocab_files

from ..errors import ConfigError, DataError
from ..formats import atomic
from ..progress import Progress, bar, format_seconds
from .corpus import Corpus, Position, Segment
from .dataset import Dataset
from .sources import data_home
from .tokenizers import load_tokenizer, tokenizer_folder

HEADER = struct.Struct("<8sIIQ32s8x")  # magic, version, bytes per token, token count, vocabulary SHA-256
MAGIC = b"NPGTOKNS"
VERSION = 1
SPLITS = ("train", "val")
# Text read, encoded and written as one batch: enough to keep every thread busy, little enough
# that its ids stay small. Each thread encodes a group at a time, by one kernel call, whose
# cache of the words it has merged starts empty (so groups are not small); a thread that
# finishes early takes the next batch's first group.
BATCH_CHARS = 1 << 22
GROUP_CHARS = 1 << 20


@dataclass(frozen=True)
class ShardSettings:
    """What, besides the input and the vocabulary, decides the shards' bytes."""
    shard_tokens: int = 1 << 24   # 32 MB shards of uint16
    val_fraction: float = 0.1
    seed: int = 1337

    def __post_init__(self):
        if self.shard_tokens < 1:
            raise ConfigError(f"--shard-tokens must be at least 1, got {self.shard_tokens}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")


def in_validation(document: int, seed: int, val_fraction: float) -> bool:
    """Whether document number `document` goes to the validation split: a fixed hash, so the
    split never depends on batching, threads or where a run resumed."""
    digest = hashlib.blake2b(f"{seed}:{document}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2.0 ** 64


def vocabulary_hash(tokenizer) -> str:
    """SHA-256 (hex) of a tokenizer's tokens and merges: the same vocabulary gives the same
    hash whichever file names (GPT-2's or Hugging Face's) it was read from."""
    digest = hashlib.sha256()
    for token in tokenizer.tokens:
        digest.update(len(token).to_bytes(4, "little") + token)
    digest.update(np.array(tokenizer.merges, dtype="<i8").tobytes())
    return digest.hexdigest()


def token_dtype(n_vocab: int) -> np.dtype:
    return np.dtype("<u2" if n_vocab <= 1 << 16 else "<u4")


def is_shard_dir(path) -> bool:
    return path is not None and (Path(path) / "manifest.json").is_file()


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {folder / 'manifest.json'}: {e}") from None
    if manifest.get("format") != "numpygpt shards" or manifest.get("version") != VERSION:
        raise DataError(f"{folder / 'manifest.json'} is not a version-{VERSION} numpygpt shard manifest")
    return manifest


def check_shard(path: Path, dtype: np.dtype, vocab_hash: str, tokens: int):
    """Raise DataError naming `path` unless its header and size are those of a shard of
    `tokens` ids of `dtype` made with the vocabulary `vocab_hash`."""
    if not path.is_file():
        raise DataError(f"shard {path} is missing; run the prepare command again to finish it")
    with open(path, "rb") as f:
        header = f.read(HEADER.size)
    if len(header) < HEADER.size or HEADER.unpack(header)[:2] != (MAGIC, VERSION):
        raise DataError(f"{path} is not a version-{VERSION} numpygpt shard (bad header)")
    _, _, itemsize, count, digest = HEADER.unpack(header)
    if itemsize != dtype.itemsize or count != tokens or digest.hex() != vocab_hash:
        raise DataError(f"{path}'s header does not match manifest.json (token size, count or "
                        "vocabulary); the shard is from another preparation")
    size = path.stat().st_size
    if size != HEADER.size + count * itemsize:
        raise DataError(f"{path} has {size:,} bytes, not the {HEADER.size + count * itemsize:,} its header "
                        "says: the file is truncated or damaged; prepare the shards again")


# ---------------------------------------------------------------------------------------------
# Writing


class SplitWriter:
    """One split's token stream, cut into shards of shard_tokens ids.

    Appends go to the open shard's NAME.tmp; a full shard gets its header, is flushed to disk
    and waits in `finished` until the manifest records it (`take_finished`, then `publish`).
    """

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int, vocab_hash: str,
                 index: int = 0, count: int = 0):
        self.folder, self.split, self.dtype = folder, split, dtype
        self.shard_tokens, self.digest = shard_tokens, bytes.fromhex(vocab_hash)
        self.index, self.count = index, count   # the open shard and how many ids it holds
        self.finished: list[dict] = []
        self.file = None
        if count:  # resuming: drop whatever came after the recorded length
            tmp = self.tmp_path()
            size = HEADER.size + count * dtype.itemsize
            if not tmp.is_file() or tmp.stat().st_size < size:
                raise DataError(f"{tmp} is shorter than manifest.json records; delete {folder} and prepare again")
            self.file = open(tmp, "r+b")
            self.file.truncate(size)
            self.file.seek(size)

    def name(self, index: int | None = None) -> str:
        return f"{self.split}_{self.index if index is None else index:06d}.bin"

    def tmp_path(self) -> Path:
        return self.folder / (self.name() + ".tmp")

    def write(self, tokens: np.ndarray):
        """Append token ids (1-D, self.dtype), finishing each shard that fills up."""
        while len(tokens):
            if self.file is None:
                self.file = open(self.tmp_path(), "w+b")
                self.file.write(bytes(HEADER.size))  # the header comes when the shard is full
            room = self.shard_tokens - self.count
            self.file.write(memoryview(tokens[:room]))
            self.count += min(room, len(tokens))
            tokens = tokens[room:]
            if self.count == self.shard_tokens:
                self.finish_shard()

    def finish_shard(self):
        """Give the open shard its header and set it aside for the manifest."""
        self.file.seek(0)
        self.file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self.count, self.digest))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.finished.append({"split": self.split, "file": self.name(), "tokens": self.count})
        self.file, self.index, self.count = None, self.index + 1, 0

    def close(self):
        """At the end of the input: finish the last, shorter shard."""
        if self.count:
            self.finish_shard()

    def flush(self):
        if self.file is not None:
            self.file.flush()

    def take_finished(self) -> list[dict]:
        finished, self.finished = self.finished, []
        return finished


def publish(folder: Path, shards: list[dict]):
    """Rename finished shards (already in the manifest) from NAME.tmp to NAME; also completes
    the renames a killed run left undone."""
    for shard in shards:
        final = folder / shard["file"]
        tmp = final.with_name(final.name + ".tmp")
        if not final.exists() and tmp.exists():
            os.replace(tmp, final)


def batches(segments, max_chars: int):
    """Consecutive segments in lists of about max_chars characters."""
    batch, chars = [], 0
    for segment in segments:
        batch.append(segment)
        chars += len(segment.text)
        if chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class Preparation:
    """One run of `prepare`: fresh, or continuing the manifest found in the output folder."""

    def __init__(self, corpus: Corpus, tokenizer_dir: Path, out_dir: Path, settings: ShardSettings,
                 workers: int | None = None):
        self.corpus, self.tokenizer_dir, self.out, self.settings = corpus, Path(tokenizer_dir), Path(out_dir), settings
        self.workers = workers
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.eot = self.tokenizer.eot_token
        if self.eot is None:
            raise DataError(f"tokenizer {tokenizer_dir} has no <|endoftext|> token to put between documents")
        self.dtype = token_dtype(self.tokenizer.n_vocab)
        wanted = {
            "format": "numpygpt shards", "version": VERSION, "complete": False,
            "input": {"path": str(corpus.path.resolve()), "files": corpus.describe()},
            "tokenizer": {"folder": "tokenizer", "vocab_hash": vocabulary_hash(self.tokenizer),
                          "n_vocab": self.tokenizer.n_vocab, "eot_token": self.eot},
            "dtype": self.dtype.name, "header_bytes": HEADER.size, "settings": asdict(settings),
            "shards": [],
            "cursor": {"position": Position().to_dict(), "open_shard_tokens": dict.fromkeys(SPLITS, 0),
                       "documents": dict.fromkeys(SPLITS, 0), "text_bytes": dict.fromkeys(SPLITS, 0)},
        }
        self.manifest = self.resume(wanted) if is_shard_dir(self.out) else self.start(wanted)

    def start(self, manifest: dict) -> dict:
        if self.out.exists() and not self.out.is_dir():
            raise DataError(f"--out {self.out} is a file; pass a new or empty folder")
        if self.out.exists() and any(self.out.iterdir()):
            raise DataError(f"{self.out} is not empty and holds no manifest.json; pass a new or empty --out folder")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic.write_json(self.out / "manifest.json", manifest)
        except OSError as e:
            raise DataError(f"cannot write to --out {self.out}: {e.strerror or e}") from None
        return manifest

    def resume(self, wanted: dict) -> dict:
        """The manifest in the output folder, once it is shown to be of this same preparation."""
        manifest = read_manifest(self.out)
        if not manifest["shards"] and not any(manifest["cursor"]["documents"].values()):
            # A preparation that stopped before its first document (its input was empty or
            # not text, say) kept nothing: this one starts afresh, whatever its settings.
            shutil.rmtree(self.out / "tokenizer", ignore_errors=True)
            atomic.write_json(self.out / "manifest.json", wanted)
            return wanted
        for what, found, expected in (
                ("input files (names, sizes, times)", manifest["input"]["files"], wanted["input"]["files"]),
                ("vocabulary", manifest["tokenizer"], wanted["tokenizer"]),
                ("token type", manifest["dtype"], wanted["dtype"]),
                ("settings", manifest["settings"], wanted["settings"])):
            if found != expected:
                raise DataError(f"{self.out} holds shards of another preparation (its {what} differ); "
                                f"pass a new --out folder, or delete {self.out} to start again")
        publish(self.out, manifest["shards"])
        for shard in manifest["shards"]:
            check_shard(self.out / shard["file"], self.dtype, manifest["tokenizer"]["vocab_hash"], shard["tokens"])
        return manifest

    def run(self, progress: bool = True) -> dict:
        """Tokenize the rest of the input into shards; returns the finished manifest. A write
        that fails (a full disk) is one DataError: what is done is kept, to resume from."""
        try:
            return self._run(progress)
        except OSError as e:
            raise DataError(f"{e.strerror or e} writing {e.filename or self.out}; the shards finished so far are "
                            "kept: run the same command again to resume once that is mended") from None

    def _run(self, progress: bool) -> dict:
        if self.manifest["complete"]:
            return self.manifest
        self.copy_tokenizer()
        cursor = self.manifest["cursor"]
        self.writers = {split: SplitWriter(self.out, split, self.dtype, self.settings.shard_tokens,
                                           self.manifest["tokenizer"]["vocab_hash"],
                                           index=sum(s["split"] == split for s in self.manifest["shards"]),
                                           count=cursor["open_shard_tokens"][split])
                        for split in SPLITS}
        open_shards = {w.tmp_path().name for w in self.writers.values() if w.count}
        for stray in self.out.glob("*.tmp"):  # written after the last manifest: redone below
            if stray.name not in open_shards:
                stray.unlink()
        self.documents, self.text_bytes = dict(cursor["documents"]), dict(cursor["text_bytes"])
        self.position = Position(**cursor["position"])
        already_read = sum(self.corpus.sizes[:self.position.file])
        self.progress = Progress(quiet=not progress)
        self.start_bytes, self.start_time = already_read, time.time()
        # Ids as one array per group, made inside the encoder's kernel without the GIL (no
        # Python int per token, so the threads encode side by side), and in the shards' type
        # on the encoding thread: this thread's reading and writing is the serial part.
        def encode(group):
            ids, offsets = self.tokenizer.encode_ordinary_batch_to_numpy([s.text for s in group], num_threads=1)
            return ids.astype(self.dtype), offsets
        # The next batch's groups are queued before this thread waits for the last one's, so a
        # thread that finishes early takes the next group rather than waiting at a batch's end.
        with ThreadPoolExecutor(self.workers or os.cpu_count() or 1) as encoders:
            previous = None
            for batch in batches(self.corpus.segments(self.position), BATCH_CHARS):
                current = [(group, encoders.submit(encode, group)) for group in batches(batch, GROUP_CHARS)]
                if previous:
                    self.write(previous)
                previous = current
            if previous:
                self.write(previous)
        if not any(self.documents.values()):
            raise DataError(f"{self.corpus.path} holds no text")
        for writer in self.writers.values():
            writer.close()
        self.checkpoint(complete=True)
        self.show_progress(self.corpus.total_bytes, final=True)
        self.progress.close()
        return self.manifest

    def write(self, groups: list[tuple[list[Segment], Future]]):
        """Append a batch's ids, group by group, to its splits' streams, with <|endoftext|>
        between documents."""
        eot = np.array([self.eot], dtype=self.dtype)
        streams = {split: [] for split in SPLITS}
        for group, future in groups:
            ids, offsets = future.result()
            for k, segment in enumerate(group):
                split = "val" if in_validation(segment.document, self.settings.seed, self.settings.val_fraction) \
                    else "train"
                if segment.starts_document:
                    if self.documents[split]:
                        streams[split].append(eot)
                    self.documents[split] += 1
                streams[split].append(ids[offsets[k]:offsets[k + 1]])
                self.text_bytes[split] += segment.size
        for split, pieces in streams.items():
            if pieces:
                self.writers[split].write(np.concatenate(pieces))
        self.position = groups[-1][0][-1].end
        if any(writer.finished for writer in self.writers.values()):
            self.checkpoint()
        self.show_progress(self.corpus.bytes_read())

    def show_progress(self, bytes_read: int, final: bool = False):
        """`[#########...............]  37% | 120/325 MB | 41.2 MB/s | 31,234,567 tokens | ETA
        0:05`; the rate and ETA count on-disk (compressed) input bytes."""
        total = self.corpus.total_bytes
        rate = (bytes_read - self.start_bytes) / max(time.time() - self.start_time, 1e-9)
        eta = (total - bytes_read) / rate if rate > 0 else 0
        done = bytes_read / max(total, 1)
        self.progress.status(f"{bar(done)} {100 * done:3.0f}% | {bytes_read / 1e6:,.0f}/{total / 1e6:,.0f} MB | "
                             f"{rate / 1e6:.1f} MB/s | {self.tokens():,} tokens | ETA {format_seconds(eta)}", final)

    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.manifest["shards"]) + sum(w.count for w in self.writers.values())

    def checkpoint(self, complete: bool = False):
        """Record the finished shards and where the input stands, then rename the shards."""
        for writer in self.writers.values():
            writer.flush()
        new = [shard for writer in self.writers.values() for shard in writer.take_finished()]
        for shard in new:
            shard["position"] = self.position.to_dict()
        self.manifest["shards"] += new
        self.manifest["complete"] = complete
        self.manifest["cursor"] = {"position": self.position.to_dict(),
                                   "open_shard_tokens": {s: w.count for s, w in self.writers.items()},
                                   "documents": dict(self.documents), "text_bytes": dict(self.text_bytes)}
        atomic.write_json(self.out / "manifest.json", self.manifest)
        publish(self.out, new)

    def copy_tokenizer(self):
        """The vocabulary files into DIR/tokenizer/, so training decodes with the same one."""
        folder = self.out / "tokenizer"
        folder.mkdir(exist_ok=True)
        for source in find_vocab_files(self.tokenizer_dir):
            atomic.write_bytes(folder / source.name, source.read_bytes())


def prepare(input_path, out_dir, tokenizer_dir, settings: ShardSettings = ShardSettings(),
            workers: int | None = None, progress: bool = True) -> dict:
    """Tokenize the corpus at input_path into shards in out_dir, or continue an interrupted
    run there; returns the manifest. workers: encoding threads (default: every core)."""
    return Preparation(Corpus(input_path), tokenizer_dir, out_dir, settings, workers).run(progress)


# ---------------------------------------------------------------------------------------------
# Reading


class ShardedTokens:
    """A split's token stream, memory-mapped across its shards: `len()` and `[start:stop]`
    like a 1-D array, so `get_batch` cuts windows from it as from one array.

    paths: the shards in order; counts: ids in each; start/stop: the part of the stream this
    object shows (see `part`).
    """

    def __init__(self, paths: list[Path], counts: list[int], dtype: np.dtype, start: int = 0,
                 stop: int | None = None):
        self.paths, self.counts, self.dtype = list(paths), list(counts), np.dtype(dtype)
        self.bounds = [0, *itertools.accumulate(self.counts)]  # shard i holds bounds[i]:bounds[i+1]
        self.start, self.stop = start, self.bounds[-1] if stop is None else stop
        # Maps opened on first use, the 64 latest kept: each holds a file descriptor.
        self.shard = functools.lru_cache(maxsize=64)(self._map_shard)

    def _map_shard(self, i: int) -> np.ndarray:
        return np.memmap(self.paths[i], dtype=self.dtype, mode="r", offset=HEADER.size, shape=(self.counts[i],))

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("ShardedTokens takes slices [start:stop] only")
        start, stop, _ = key.indices(len(self))
        start, stop = self.start + start, self.start + max(stop, start)
        pieces = []
        i = bisect_right(self.bounds, start) - 1
        while start < stop:
            end = min(stop, self.bounds[i + 1])
            pieces.append(self.shard(i)[start - self.bounds[i]:end - self.bounds[i]])
            start, i = end, i + 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, self.dtype)

    def part(self, rank: int, world_size: int) -> "ShardedTokens":
        """The rank-th of world_size equal consecutive parts, so data-parallel ranks drawing
        windows with the same generator still train on different tokens."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        n = len(self)
        return ShardedTokens(self.paths, self.counts, self.dtype, self.start + n * rank // world_size,
                             self.start + n * (rank + 1) // world_size)


def load_shards(folder, tokenizer: str | None = None, home: Path | None = None, rank: int = 0,
                 world_size: int = 1) -> Dataset:
    """The Dataset of a finished shard folder. tokenizer: None for the shards' own, else
    "gpt2" or a folder, which must hold the shards' vocabulary. rank/world_size: this
    process's part of the training stream (validation is whole on every rank)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest["complete"]:
        raise DataError(f"{folder} is unfinished (its preparation stopped); run "
                        f"numpygpt prepare again with the same arguments to finish it")
    vocab_hash = manifest["tokenizer"]["vocab_hash"]
    if tokenizer is not None:
        if tokenizer == "train":
            raise DataError(f"{folder} is tokenized already; leave --tokenizer out to use its vocabulary")
        other = tokenizer_folder(tokenizer, home or data_home())
        if vocabulary_hash(load_tokenizer(other)) != vocab_hash:
            raise DataError(f"tokenizer {tokenizer} does not match the vocabulary the shards in {folder} were "
                            f"made with; leave --tokenizer out to use theirs ({folder / 'tokenizer'})")
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    splits = {}
    for split in SPLITS:
        shards = [s for s in manifest["shards"] if s["split"] == split]
        for shard in shards:
            check_shard(folder / shard["file"], dtype, vocab_hash, shard["tokens"])
        splits[split] = ShardedTokens([folder / s["file"] for s in shards], [s["tokens"] for s in shards], dtype)
    return Dataset(splits["train"].part(rank, world_size), splits["val"], folder / "tokenizer", folder.name,
                   manifest["cursor"]["text_bytes"]["val"], manifest["cursor"]["documents"]["train"])
