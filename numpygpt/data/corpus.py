"""A corpus larger than memory, read as a stream of documents that can restart anywhere.

The input is a text file, a `.jsonl` file (one JSON object a line; its "text" field is a
document), or a folder of them (recursively, in sorted path order), each plain, `.gz`, or
`.zst` (needs the `zstandard` package: `pip install numpygpt[zstd]`). In a text file the
literal `<|endoftext|>` ends a document, and so does the end of the file; in a .jsonl text it
is ordinary text. Documents that are only whitespace are skipped.

Nothing is read whole but a .jsonl line. A text file's document longer than `segment_bytes`
comes in segments, cut where a word ends (a printable ASCII byte followed by a space or a line
break): GPT-2's pre-tokenizer always splits there, so encoding the segments gives exactly the
document's tokens. Only a run of SEARCH_BYTES with no word end in it is cut elsewhere (at a
character boundary).

Each segment carries the `Position` after it, and `Corpus.segments(start)` reads on from any
such position: a preparation that stopped resumes where its last shard was complete.
"""
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DataError

SEPARATOR = b"<|endoftext|>"
BLOCK_BYTES = 1 << 20      # read size
SEGMENT_BYTES = 1 << 20    # longest segment of a long document (plus up to one block)
SEARCH_BYTES = 1 << 16     # how far back from a segment's end to look for a word end
KINDS = (".txt", ".jsonl")
COMPRESSIONS = (".gz", ".zst")


@dataclass(frozen=True)
class Position:
    """A place in the corpus from which reading can restart."""
    file: int = 0                  # index into Corpus.files
    offset: int = 0                # bytes of that file read, after decompression
    documents: int = 0             # documents started so far, over all files
    inside_document: bool = False  # the offset falls between two segments of one document

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    """A document, or a part of a long one."""
    text: str
    document: int          # the document's index in the corpus: 0, 1, 2, ...
    starts_document: bool  # False for the second and later segments of a long document
    end: Position          # where reading continues after this segment
    size: int = 0          # the text's UTF-8 bytes


def file_format(path: Path) -> tuple[str, str]:
    """(kind, compression) from the file name: kind ".txt" or ".jsonl", compression "", ".gz"
    or ".zst". A name with neither kind, such as `input`, is read as text."""
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), "")
    name = name[:len(name) - len(compression)]
    return (".jsonl" if name.endswith(".jsonl") else ".txt"), compression


def corpus_files(path: Path) -> list[Path]:
    """The input files: `path` itself, or the .txt/.jsonl files (plain or compressed) below a
    folder in sorted order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and any(p.name.lower().endswith(k + c) for k in KINDS for c in ("", *COMPRESSIONS)))
        if not files:
            raise DataError(f"no .txt or .jsonl files (plain, .gz or .zst) in folder {path}")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"data not found: {path}")


def zstandard_module():
    try:
        import zstandard
    except ImportError:
        raise DataError("reading .zst files needs the zstandard package: "
                        "pip install 'numpygpt[zstd]' (or zstandard)") from None
    return zstandard


def open_decompressed(path: Path, raw) -> io.BufferedIOBase:
    """The decompressed bytes of the open file `raw` (binary), whose name is `path`."""
    compression = file_format(path)[1]
    if compression == ".gz":
        return gzip.GzipFile(fileobj=raw)
    if compression == ".zst":
        reader = zstandard_module().ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, BLOCK_BYTES)
    return raw


def skip(stream, n: int, path: Path):
    """Move `stream` n bytes on from its start."""
    if stream.seekable():
        stream.seek(n)
        return
    while n > 0:
        block = stream.read(min(n, BLOCK_BYTES))
        if not block:
            raise DataError(f"{path} is shorter than when this preparation began")
        n -= len(block)


def word_end_before(data: bytes, limit: int) -> int:
    """The last p <= limit where a word ends (data[p - 1] printable ASCII, data[p] a space or
    a line break), looking back SEARCH_BYTES at most; 0 if there is none."""
    floor = max(limit - SEARCH_BYTES, 0)
    p = limit
    while p > floor:
        p = max(data.rfind(b" ", floor, p + 1), data.rfind(b"\n", floor, p + 1))
        if p <= floor:
            return 0
        if 0x21 <= data[p - 1] <= 0x7E:
            return p
        p -= 1
    return 0


def character_start_before(data: bytes, limit: int) -> int:
    """The last p <= limit where a UTF-8 character starts (not a continuation byte)."""
    p = limit
    while p > 0 and data[p] & 0xC0 == 0x80:
        p -= 1
    return p


def text_pieces(stream, offset: int, segment_bytes: int) -> Iterator[tuple[int, bytes, bool, int]]:
    """(start offset, bytes, ends_document, end offset) of each document or segment of a text
    stream positioned at `offset`; the separators are left out."""
    carry = b""  # the start of a document whose end has not been read yet
    start = offset
    while block := stream.read(BLOCK_BYTES):
        *documents, carry = (carry + block).split(SEPARATOR)
        for document in documents:
            yield start, document, True, start + len(document) + len(SEPARATOR)
            start += len(document) + len(SEPARATOR)
        # Keep a separator's possible first bytes at the end of carry for the next block.
        while len(carry) > segment_bytes + len(SEPARATOR):
            cut = word_end_before(carry, segment_bytes) or character_start_before(carry, segment_bytes)
            yield start, carry[:cut], False, start + cut
            carry, start = carry[cut:], start + cut
    yield start, carry, True, start + len(carry)


def decode(data: bytes, path: Path, start: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (bad byte at offset {start + e.start})") from None


def jsonl_documents(stream, path: Path, offset: int) -> Iterator[tuple[str, int]]:
    """(text, end offset) of each line's "text" field in a .jsonl stream at `offset`."""
    for line in stream:
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        try:
            record = json.loads(decode(line, path, start))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: the line at byte {start} is not JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}: the line at byte {start} has no \"text\" string field")
        yield record["text"], offset


class Corpus:
    """The documents under an input path, streamed segment by segment.

    corpus = Corpus("data/web")          # a file or a folder
    for segment in corpus.segments(): ...
    corpus.bytes_read()                  # on-disk (compressed) bytes read so far, for an ETA
    """

    def __init__(self, path, segment_bytes: int = SEGMENT_BYTES):
        self.path = Path(path)
        self.files = corpus_files(self.path)
        self.sizes = [f.stat().st_size for f in self.files]
        self.total_bytes = sum(self.sizes)
        self.segment_bytes = segment_bytes
        self._read_errors = (OSError, EOFError, zlib.error)
        if any(file_format(f)[1] == ".zst" for f in self.files):
            # Fail now rather than after hours of the other files.
            self._read_errors += (zstandard_module().ZstdError,)
        self._raw = None
        self._bytes_before = 0  # on-disk bytes of the files before the open one

    def describe(self) -> list[dict]:
        """Name, size and modification time of every file: what a resumed run must find again."""
        root = self.path if self.path.is_dir() else self.path.parent
        return [{"path": f.relative_to(root).as_posix(), "bytes": size, "mtime_ns": f.stat().st_mtime_ns}
                for f, size in zip(self.files, self.sizes)]

    def bytes_read(self) -> int:
        raw = self._raw
        return self._bytes_before + (raw.tell() if raw is not None and not raw.closed else 0)

    def segments(self, start: Position = Position()) -> Iterator[Segment]:
        """Every segment after `start`, in order."""
        documents, inside = start.documents, start.inside_document
        for index in range(start.file, len(self.files)):
            path = self.files[index]
            offset = start.offset if index == start.file else 0
            self._bytes_before = sum(self.sizes[:index])
            try:
                with open(path, "rb") as raw, open_decompressed(path, raw) as stream:
                    self._raw = raw
                    skip(stream, offset, path)
                    for text, size, ends, end in self._pieces(stream, path, offset):
                        if not inside and ends and not text.strip():
                            continue
                        starts = not inside
                        if starts:
                            documents += 1
                        inside = not ends
                        yield Segment(text, documents - 1, starts, Position(index, end, documents, inside), size)
            except self._read_errors as e:  # a corrupt or truncated .gz or .zst
                raise DataError(f"cannot read {path}: {e}") from None
            finally:
                self._raw = None

    def _pieces(self, stream, path: Path, offset: int) -> Iterator[tuple[str, int, bool, int]]:
        """(text, its UTF-8 bytes, ends_document, end offset) of one file's documents and segments."""
        if file_format(path)[0] == ".jsonl":
            for text, end in jsonl_documents(stream, path, offset):
                yield text, len(text.encode("utf-8")), True, end
        else:
            for start, data, ends, end in text_pieces(stream, offset, self.segment_bytes):
                yield decode(data, path, start), len(data), ends, end
