"""Read a GGUF file's metadata and tensor table without reading its weights, and check it is complete.

gguf's ``GGUFReader`` builds numpy views of every metadata array (the vocabulary, the merges) and
takes about 9 s on SmolLM2's file here; this walks the same layout with ``struct`` over a memory map
and skips the arrays, so config validation can ask for a model's depth in milliseconds.
Layout (GGUF v2/v3, little-endian): magic, version, tensor count, key-value count, key-values,
tensor infos (name, dims, type, offset), padding to ``general.alignment``, tensor data.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # per-type block sizes; the models extra installs it

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """The file is not GGUF, or is truncated or corrupt."""


class _Cursor:
    def __init__(self, buf: mmap.mmap):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFFormatError(f"file ends inside the header (at byte {self.pos:,})")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise GGUFFormatError(f"file ends inside a string of the header (at byte {self.pos:,})")
        text = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            for _ in range(count):
                self.value(etype)
            return {"array_of": etype, "length": count}
        raise GGUFFormatError(f"unknown metadata value type {vtype} at byte {self.pos:,}")


def read_header(path: Path) -> dict[str, Any]:
    """``{"metadata": {key: value}, "tensors": [(name, shape, ggml_type, offset)], "data_start", "data_end"}``.

    ``data_end`` is where the last tensor's bytes end; a file shorter than that is truncated.
    Raises ``GGUFFormatError`` (with the reason, not the path: the caller names the file).
    """
    with Path(path).open("rb") as fh:
        if Path(path).stat().st_size < 24:
            raise GGUFFormatError("file is too short to be GGUF")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf)
            if bytes(buf[:4]) != b"GGUF":
                raise GGUFFormatError(f"bad magic {bytes(buf[:4])!r} (expected b'GGUF')")
            cur.pos = 4
            version = cur.unpack("<I")
            if version not in (2, 3):
                raise GGUFFormatError(f"unsupported GGUF version {version}")
            n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
            metadata = {}
            for _ in range(n_kv):
                key = cur.string()
                metadata[key] = cur.value(cur.unpack("<I"))
            tensors = []
            for _ in range(n_tensors):
                name = cur.string()
                shape = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
                tensors.append((name, shape, cur.unpack("<I"), cur.unpack("<Q")))
            alignment = int(metadata.get("general.alignment", 32))
            data_start = -(-cur.pos // alignment) * alignment
    data_end = data_start
    for name, shape, ggml_type, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except ValueError:
            raise GGUFFormatError(f"tensor {name!r} has unknown type {ggml_type}") from None
        elements = 1
        for dim in shape:
            elements *= dim
        data_end = max(data_end, data_start + offset + elements // block * type_size)
    return {"version": version, "metadata": metadata, "tensors": tensors, "data_start": data_start,
            "data_end": data_end}
