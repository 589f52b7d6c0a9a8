"""The safetensors file format, read and written with NumPy alone.

A file is: 8 bytes (little-endian u64) giving the header's length, a JSON header mapping each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data that
follows) plus an optional "__metadata__" of strings, then the raw little-endian tensor bytes.
It is safe (no pickle), memory-mappable, and read by PyTorch, JAX and Hugging Face tools.
"""
import json
import mmap as mmap_module
import struct

import numpy as np

from ..errors import FormatError

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
          "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}
CODES = {np.dtype(t): code for code, t in DTYPES.items() if t is not None}
MAX_HEADER = 100 * 1024 * 1024


def save(tensors: dict, file, metadata: dict | None = None):
    """Write {name: array} to an open binary file (in the given order)."""
    header, offset, arrays = {}, 0, []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in CODES:
            raise FormatError(f"tensor {name}: dtype {array.dtype} cannot be stored")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": CODES[array.dtype.newbyteorder("=")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned
    file.write(struct.pack("<Q", len(encoded)))
    file.write(encoded)
    for array in arrays:
        file.write(array.tobytes())


def release(array):
    """Give back the memory of a tensor read from a memory-mapped file: its pages leave this
    process (they stay in the page cache), so reading a large file tensor by tensor does not
    keep it all resident. Anything but a view of a memmap is left alone."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    if base is None or not hasattr(mmap_module, "MADV_DONTNEED") or base._mmap is None:
        return
    page = mmap_module.PAGESIZE
    start = array.ctypes.data - np.frombuffer(base._mmap, dtype=np.uint8).ctypes.data
    first = start // page * page
    base._mmap.madvise(mmap_module.MADV_DONTNEED, first, start + array.nbytes - first)


def load(path, mmap: bool = True) -> tuple[dict, dict]:
    """Read a file -> ({name: array}, metadata). With mmap the arrays are read-only views of
    the file, loaded lazily; copy them before changing them."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise FormatError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise FormatError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FormatError(f"{path}: not a safetensors file (unreadable header)") from None
        f.seek(0, 2)
        size = f.tell()
    metadata = header.pop("__metadata__", {}) or {}
    data = (np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if mmap and size > 8 + n
            else np.fromfile(path, dtype=np.uint8, offset=8 + n))
    tensors = {}
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            dtype = DTYPES[info["dtype"]]
            shape = tuple(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: malformed entry for tensor {name}") from None
        if dtype is None:
            raise FormatError(f"{path}: tensor {name} is bfloat16, which NumPy cannot read")
        dtype = np.dtype(dtype).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= data.size or end - begin != count * dtype.itemsize:
            raise FormatError(f"{path}: tensor {name} lies outside the file (truncated?)")
        tensors[name] = data[begin:end].view(dtype).reshape(shape)
    return tensors, metadata
