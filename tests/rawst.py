"""Byte-level safetensors reading/writing for tests and the hostile corpus (no torch needed).

``read_raw``/``write_raw`` let a test damage exactly one thing in a valid cu file (a NaN, an edited
header field, a transposed shape) and, where it wants, fix up ``cu.payload_sha256`` and
``cu.header_sha256`` so that only the intended defect remains.
"""

from __future__ import annotations

import hashlib
import json
import struct

from cu_cli.ckpt.format import header_sha256


def read_raw(path) -> tuple[dict, bytes]:
    """(header dict including ``__metadata__``, data section bytes)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        return header, f.read()


def encode(header: dict, data: bytes, rehash_payload: bool = True,
           rehash_header: bool = True) -> bytes:
    """Serialise ``header`` + ``data``; optionally recompute the payload and header hashes."""
    header = json.loads(json.dumps(header))
    meta = header.setdefault("__metadata__", {})
    if rehash_payload:
        meta["cu.payload_sha256"] = "sha256:" + hashlib.sha256(data).hexdigest()
    if rehash_header:
        meta["cu.header_sha256"] = header_sha256(meta)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def write_raw(path, header: dict, data: bytes, **kw) -> str:
    with open(path, "wb") as f:
        f.write(encode(header, data, **kw))
    return str(path)


def set_f32(header: dict, data: bytes, key: str, index: int, value: float) -> bytes:
    """``data`` with element ``index`` of F32 tensor ``key`` replaced by ``value``."""
    a, _ = header[key]["data_offsets"]
    buf = bytearray(data)
    buf[a + 4 * index:a + 4 * index + 4] = struct.pack("<f", value)
    return bytes(buf)


def f32_tensors(tensors: dict[str, tuple[list[int], list[float]]]) -> tuple[dict, bytes]:
    """Header entries + data for F32 tensors ``{name: (shape, flat values)}`` (sorted by name)."""
    header, data = {}, b""
    for name in sorted(tensors):
        shape, values = tensors[name]
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    return header, data
