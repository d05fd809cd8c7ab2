"""The cu checkpoint: one ``.safetensors`` file with absolute fp32 weights and a ``cu.*`` header.

Layout (safetensors spec): 8-byte little-endian header length N, N bytes of JSON, then the data
section. ``cu.payload_sha256`` is the sha256 of the **data section only**; the header key order may
vary between writes, the data section does not (tensors ordered by dtype alignment, then name), so
the hash identifies the weights. Writes are atomic (temp + fsync + rename). See conventions.md §2.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

from cu_cli._util.errors import CuError, IncompatibleError
from cu_cli._util.fs import atomic_write_bytes

FORMAT_VERSION = 1
KNOWN_KEYS = {
    "format", "cu.format_version", "cu.kind", "cu.base.id", "cu.base.arch", "cu.base.fingerprint",
    "cu.payload_sha256", "cu.parents", "cu.lineage", "cu.erased", "cu.tensors", "cu.dtype",
    "cu.created_by", "cu.basis.prompts", "cu.basis.concepts", "cu.basis.dedup_cos",
    "cu.basis.extraction", "cu.basis.similarities", "cu.basis.target", "cu.basis.params",
}
JSON_KEYS = ("cu.parents", "cu.lineage", "cu.erased", "cu.basis.prompts", "cu.basis.concepts",
             "cu.basis.similarities", "cu.basis.params")
MAX_HEADER = 100_000_000


@dataclass
class Header:
    """Parsed safetensors header: tensor entries plus the ``__metadata__`` strings."""

    path: str
    metadata: dict[str, str]
    tensors: dict[str, dict]  # name -> {"dtype", "shape", "data_offsets"}
    data_start: int
    file_size: int
    warnings: list[str] = field(default_factory=list)

    def json(self, key: str, default=None):
        """Decode a JSON-valued ``cu.*`` key."""
        raw = self.metadata.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise IncompatibleError(f"{self.path}: header key {key} is not valid JSON ({e.msg})")

    @property
    def kind(self) -> str | None:
        return self.metadata.get("cu.kind")

    @property
    def payload_sha256(self) -> str | None:
        return self.metadata.get("cu.payload_sha256")

    @property
    def n_params(self) -> int:
        total = 0
        for info in self.tensors.values():
            n = 1
            for d in info["shape"]:
                n *= d
            total += n
        return total


def read_header(path: str) -> Header:
    """Parse and validate the header without reading tensor data; exit-3 errors when corrupt."""
    if not os.path.exists(path):
        raise CuError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CuError(f"{path} is a directory, not a .safetensors file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise IncompatibleError(f"{path}: not a safetensors file (truncated: {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise IncompatibleError(f"{path}: corrupt or truncated safetensors header "
                                    f"(header length {n}, file size {size})")
        raw = f.read(n)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IncompatibleError(f"{path}: corrupt safetensors header (not JSON)")
    if not isinstance(obj, dict):
        raise IncompatibleError(f"{path}: corrupt safetensors header")
    meta = obj.pop("__metadata__", None) or {}
    data_start = 8 + n
    end = 0
    for name, info in obj.items():
        try:
            a, b = info["data_offsets"]
            info["dtype"], info["shape"]
        except (KeyError, TypeError, ValueError):
            raise IncompatibleError(f"{path}: corrupt entry for tensor {name!r}")
        end = max(end, b)
    if data_start + end > size:
        raise IncompatibleError(f"{path}: truncated file (data ends at {data_start + end}, "
                                f"file has {size} bytes)")
    return Header(path=path, metadata={str(k): str(v) for k, v in meta.items()}, tensors=obj,
                  data_start=data_start, file_size=size)


def read_cu_header(path: str, kind: str | None = None) -> Header:
    """Read a header written by cu; check ``format``, ``cu.format_version`` and ``cu.kind``."""
    h = read_header(path)
    meta = h.metadata
    if meta.get("format") != "pt":
        raise IncompatibleError(f"{path}: header lacks format=pt; not a cu file")
    version = meta.get("cu.format_version")
    if version is None:
        raise IncompatibleError(f"{path}: not a cu file (no cu.format_version in the header)")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise IncompatibleError(f"{path}: bad cu.format_version {version!r}")
    if major > FORMAT_VERSION:
        raise IncompatibleError(f"{path}: cu.format_version {version} is newer than this cu "
                                f"supports ({FORMAT_VERSION}); upgrade cu")
    if kind is not None and h.kind != kind:
        raise IncompatibleError(f"{path}: cu.kind is {h.kind!r}, expected {kind!r}")
    unknown = sorted(k for k in meta if k.startswith("cu.") and k not in KNOWN_KEYS)
    if unknown:
        h.warnings.append(f"{path}: unknown header keys {', '.join(unknown)} (written by a newer cu?)")
    return h


def payload_sha256(path: str, header: Header | None = None) -> str:
    """``sha256:`` of the data section of a safetensors file (streamed)."""
    header = header or read_header(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(header.data_start)
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def verify_payload(header: Header) -> None:
    """Fail (exit 3) when the data section does not match ``cu.payload_sha256``."""
    expected = header.payload_sha256
    if expected is None:
        raise IncompatibleError(f"{header.path}: no cu.payload_sha256 in the header")
    actual = payload_sha256(header.path, header)
    if actual != expected:
        raise IncompatibleError(f"{header.path}: payload hash mismatch (file corrupted or edited): "
                                f"header {expected[:19]}…, data {actual[:19]}…")


def _serialize(tensors: dict, metadata: dict[str, str]) -> tuple[bytes, bytes]:
    """(header JSON bytes, data section bytes) as safetensors lays them out."""
    import torch
    from safetensors.torch import save

    clean = {}
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise CuError(f"tensor {k!r} is not a torch.Tensor")
        clean[k] = v.detach().to("cpu").contiguous().clone()  # own storage (peft's rule)
    blob = save(clean, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8:8 + n], blob[8 + n:]


def encode_metadata(meta: dict) -> dict[str, str]:
    """Header values are strings; lists/dicts become one JSON string per key."""
    out = {}
    for k, v in meta.items():
        if v is None:
            continue
        out[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return out


def write_safetensors(path: str, tensors: dict, metadata: dict) -> str:
    """Write tensors + metadata atomically, adding ``cu.payload_sha256``; returns the hash."""
    meta = encode_metadata({"format": "pt", **metadata})
    header_json, data = _serialize(tensors, meta)
    payload = "sha256:" + hashlib.sha256(data).hexdigest()
    header = json.loads(header_json)
    header["__metadata__"] = {**header.get("__metadata__", {}), "cu.payload_sha256": payload}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)  # keep the data section 8-byte aligned
    atomic_write_bytes(path, [struct.pack("<Q", len(raw)), raw, data])
    return payload


def load_tensors(path: str, keys: list[str] | None = None, device: str = "cpu") -> dict:
    """Load (some) tensors of a safetensors file."""
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(path, framework="pt", device=device) as f:
            for k in keys if keys is not None else list(f.keys()):
                out[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise IncompatibleError(f"{path}: cannot read tensors ({str(e).splitlines()[0]})")
    return out
