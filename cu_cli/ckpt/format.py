"""The cu checkpoint: one ``.safetensors`` file with absolute fp32 weights and a ``cu.*`` header.

Layout (safetensors spec): 8-byte little-endian header length N, N bytes of JSON, then the data
section. ``cu.payload_sha256`` is the sha256 of the **data section only**; the header key order may
vary between writes, the data section does not (tensors ordered by dtype alignment, then name), so
the hash identifies the weights. ``cu.header_sha256`` is the sha256 of the canonical JSON (sorted
keys) of every other ``cu.*`` key, so a hand-edited ``cu.erased`` or base id is caught on read
(exit 3); a file without it (older cu) is read with a warning. Writes are atomic (temp + fsync +
rename). Tensors with NaN/inf are refused on write (exit 1) and on read (exit 3), naming the key.
Reading validates every entry's dtype, shape and offsets against the data section. See
conventions.md §2.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

from cu_cli._util.errors import CuError, IncompatibleError
from cu_cli._util.fs import atomic_path, atomic_write_bytes, open_temp, read_error

FORMAT_VERSION = 1
KNOWN_KEYS = {
    "format", "cu.format_version", "cu.kind", "cu.base.id", "cu.base.arch", "cu.base.fingerprint",
    "cu.payload_sha256", "cu.header_sha256", "cu.parents", "cu.lineage", "cu.erased",
    "cu.tensors", "cu.dtype", "cu.created_by", "cu.basis.prompts", "cu.basis.concepts",
    "cu.basis.dedup_cos", "cu.basis.extraction", "cu.basis.similarities", "cu.basis.target",
    "cu.basis.params", "cu.export.format", "cu.export.source",
}
JSON_KEYS = ("cu.parents", "cu.lineage", "cu.erased", "cu.basis.prompts", "cu.basis.concepts",
             "cu.basis.similarities", "cu.basis.params")
MAX_HEADER = 100_000_000
HEADER_HASH_KEY = "cu.header_sha256"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


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
        """Decode a JSON-valued ``cu.*`` key (NaN/Infinity literals are refused)."""
        raw = self.metadata.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (json.JSONDecodeError, ValueError, RecursionError) as e:
            raise IncompatibleError(f"{self.path}: header key {key} is not valid JSON "
                                    f"({getattr(e, 'msg', str(e))})")

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


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def header_sha256(metadata: dict[str, str]) -> str:
    """``sha256:`` over the canonical JSON (sorted keys) of every ``cu.*`` key but this one."""
    covered = {k: v for k, v in metadata.items() if k.startswith("cu.") and k != HEADER_HASH_KEY}
    blob = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _check_entries(path: str, obj: dict, data_len: int) -> None:
    """Offsets, dtype and shape of every tensor entry vs the data section (exit 3 when wrong)."""
    spans = []
    for name, info in obj.items():
        if not isinstance(info, dict):
            raise IncompatibleError(f"{path}: corrupt entry for tensor {name!r}")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise IncompatibleError(f"{path}: tensor {name!r} has unknown dtype {str(dtype)[:20]!r}")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise IncompatibleError(f"{path}: tensor {name!r} has an invalid shape")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise IncompatibleError(f"{path}: tensor {name!r} has invalid data_offsets")
        a, b = offs
        if a < 0 or b < a:
            raise IncompatibleError(f"{path}: tensor {name!r} has invalid data_offsets [{a}, {b}]")
        if b > data_len:
            raise IncompatibleError(f"{path}: tensor {name!r} data [{a}, {b}] lies beyond the data "
                                    f"section ({data_len} bytes; truncated file?)")
        numel = 1
        for d in shape:
            numel *= d
        if numel * DTYPE_BYTES[dtype] != b - a:
            raise IncompatibleError(f"{path}: tensor {name!r} is {dtype} {shape} "
                                    f"({numel * DTYPE_BYTES[dtype]} bytes) but its data_offsets "
                                    f"span {b - a} bytes")
        spans.append((a, b, name))
    pos = 0
    for a, b, name in sorted(spans):
        if a < pos:
            raise IncompatibleError(f"{path}: tensor {name!r} overlaps the previous tensor's data")
        if a > pos:
            raise IncompatibleError(f"{path}: gap of {a - pos} bytes before tensor {name!r}")
        pos = b
    if pos != data_len:
        raise IncompatibleError(f"{path}: {data_len - pos} unexplained bytes after the last tensor")


def read_header(path: str) -> Header:
    """Parse and validate the header without reading tensor data; exit-3 errors when corrupt.

    Checks: length prefix, UTF-8 JSON object without duplicate keys, string-to-string metadata,
    and each entry's dtype, shape and offsets against the data section (no overlap, no gap, no
    byte beyond or after it; byte length = numel × dtype size).
    """
    if not os.path.exists(path):
        raise CuError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CuError(f"{path} is a directory, not a .safetensors file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise IncompatibleError(f"{path}: not a safetensors file (truncated: {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise IncompatibleError(f"{path}: not a safetensors file, or a corrupt/truncated "
                                        f"one (header length {n}, file size {size})")
            raw = f.read(n)
    except OSError as e:
        raise read_error(e, path)
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise IncompatibleError(f"{path}: not a safetensors file (header is not UTF-8 JSON)")
    except (json.JSONDecodeError, RecursionError):
        raise IncompatibleError(f"{path}: not a safetensors file (header is not JSON)")
    except ValueError as e:
        raise IncompatibleError(f"{path}: corrupt safetensors header ({e})")
    if not isinstance(obj, dict):
        raise IncompatibleError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = obj.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise IncompatibleError(f"{path}: corrupt safetensors header (__metadata__ must map "
                                "strings to strings)")
    data_start = 8 + n
    _check_entries(path, obj, size - data_start)
    return Header(path=path, metadata=dict(meta), tensors=obj, data_start=data_start,
                  file_size=size)


_LIST_OF = {"cu.parents": str, "cu.erased": str, "cu.lineage": dict, "cu.basis.concepts": str,
            "cu.basis.prompts": str}


def _check_json_fields(h: Header) -> None:
    """The JSON-valued keys every command reads must decode to lists of the right item type."""
    for key, item in _LIST_OF.items():
        if key not in h.metadata:
            continue
        v = h.json(key)
        if not isinstance(v, list) or not all(isinstance(x, item) for x in v):
            raise IncompatibleError(f"{h.path}: header key {key} must be a JSON list of "
                                    f"{'strings' if item is str else 'objects'}")


def read_cu_header(path: str, kind: str | None = None) -> Header:
    """Read a header written by cu; check ``format``, ``cu.format_version``, the header hash and
    ``cu.kind`` (exit 3 when wrong; no header hash: a warning, the file is still readable)."""
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
        raise IncompatibleError(f"{path}: bad cu.format_version {version[:20]!r}")
    if major > FORMAT_VERSION:
        raise IncompatibleError(f"{path}: cu.format_version {version} is newer than this cu "
                                f"supports ({FORMAT_VERSION}); upgrade cu")
    if major < 1:
        raise IncompatibleError(f"{path}: bad cu.format_version {version[:20]!r}")
    stored = meta.get(HEADER_HASH_KEY)
    if stored is None:
        h.warnings.append(f"{path}: no {HEADER_HASH_KEY} (written by an older cu); its header "
                          "fields are not integrity-checked")
    elif stored != header_sha256(meta):
        raise IncompatibleError(f"{path}: {HEADER_HASH_KEY} mismatch: the cu.* header fields were "
                                "edited or corrupted after cu wrote them")
    if kind is not None and h.kind != kind:
        raise IncompatibleError(f"{path}: cu.kind is {str(h.kind)[:40]!r}, expected {kind!r}")
    _check_json_fields(h)
    if meta.get("cu.dtype") == "float32":
        odd = sorted(k for k, v in h.tensors.items() if v["dtype"] != "F32")
        if odd:
            raise IncompatibleError(f"{path}: tensor {odd[0]} is {h.tensors[odd[0]]['dtype']}, but "
                                    "the header says cu.dtype float32")
    unknown = sorted(k for k in meta if k.startswith("cu.") and k not in KNOWN_KEYS)
    if unknown:
        h.warnings.append(f"{path}: unknown header keys {', '.join(unknown)} (written by a newer cu?)")
    return h


def payload_sha256(path: str, header: Header | None = None) -> str:
    """``sha256:`` of the data section of a safetensors file (streamed)."""
    header = header or read_header(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            f.seek(header.data_start)
            while chunk := f.read(1 << 22):
                h.update(chunk)
    except OSError as e:
        raise read_error(e, path)
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


def nonfinite_count(t) -> int:
    """Number of NaN/±inf entries of a floating tensor (0 for integer tensors)."""
    import torch

    if not (t.is_floating_point() or t.is_complex()):
        return 0
    return int((~torch.isfinite(t)).sum())


def _serialize(tensors: dict, metadata: dict[str, str], path: str = "") -> tuple[bytes, bytes]:
    """(header JSON bytes, data section bytes) as safetensors lays them out; refuses NaN/inf."""
    import torch
    from safetensors.torch import save

    clean = {}
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise CuError(f"tensor {k!r} is not a torch.Tensor")
        bad = nonfinite_count(v)
        if bad:
            raise CuError(f"refusing to write {path or 'the output'}: tensor {k} has {bad} "
                          "non-finite value(s) (NaN/inf); nothing written")
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
        try:
            out[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, allow_nan=False)
        except ValueError:
            raise CuError(f"header field {k} holds a NaN/inf number; refusing to write it")
    return out


def write_safetensors(path: str, tensors: dict, metadata: dict, derived=None) -> str:
    """Write tensors + metadata atomically, adding ``cu.payload_sha256`` and ``cu.header_sha256``
    (NaN/inf tensors are refused, exit 1); returns the payload hash. ``derived(payload)`` may
    return more metadata computed from the payload hash (an export's ``modelspec.hash_sha256``)."""
    meta = encode_metadata({"format": "pt", **metadata})
    meta.pop(HEADER_HASH_KEY, None)
    header_json, data = _serialize(tensors, meta, path)
    payload = "sha256:" + hashlib.sha256(data).hexdigest()
    header = json.loads(header_json)
    final = {**header.get("__metadata__", {}), "cu.payload_sha256": payload}
    if derived is not None:
        final.update(encode_metadata(derived(payload)))
    final[HEADER_HASH_KEY] = header_sha256(final)
    header["__metadata__"] = final
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)  # keep the data section 8-byte aligned
    atomic_write_bytes(path, [struct.pack("<Q", len(raw)), raw, data])
    return payload


# safetensors' data order: dtypes by descending rank of its ``Dtype`` enum, then names (bytewise)
_DTYPE_RANK = ("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32",
               "U32", "F32", "F64", "I64", "U64")
_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                 "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                 "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_HASH_PLACEHOLDER = "sha256:" + "0" * 64
HEADER_SLACK = 1024  # bytes reserved for metadata that ``finalize`` may grow (timings, peaks)


def data_order(specs: dict) -> list[str]:
    """Tensor names in the order safetensors lays out their data (``specs``: name -> (dtype,
    shape)); the payload hash depends on it."""
    rank = {d: i for i, d in enumerate(_DTYPE_RANK)}
    return sorted(specs, key=lambda k: (-rank[specs[k][0]], k.encode()))


def write_safetensors_stream(path: str, specs: dict, produce, metadata: dict,
                             finalize=None) -> str:
    """Write a safetensors file one tensor at a time; same data section, ``cu.payload_sha256``
    and ``cu.header_sha256`` as :func:`write_safetensors` for the same tensors and metadata.

    ``specs`` maps name -> (safetensors dtype, shape); ``produce(name)`` is called once per name,
    in :func:`data_order`, and must return that tensor (NaN/inf refused, exit 1, nothing written);
    only one produced tensor is alive at a time. ``finalize()`` may return metadata computed after
    the data (timings): the header is written last, over space reserved before the data (JSON
    ending in spaces, which every safetensors reader accepts). Returns the payload hash.
    """
    import torch

    meta = encode_metadata({"format": "pt", **metadata})
    meta.pop(HEADER_HASH_KEY, None)
    order = data_order(specs)
    entries, pos = {}, 0
    for k in order:
        dtype, shape = specs[k]
        numel = 1
        for d in shape:
            numel *= int(d)
        entries[k] = {"dtype": dtype, "shape": [int(d) for d in shape],
                      "data_offsets": [pos, pos + numel * DTYPE_BYTES[dtype]]}
        pos += numel * DTYPE_BYTES[dtype]

    def render(m: dict) -> bytes:
        m = {**m, "cu.payload_sha256": payload}
        m[HEADER_HASH_KEY] = header_sha256(m)
        return json.dumps({"__metadata__": m, **entries}, separators=(",", ":")).encode()

    payload = _HASH_PLACEHOLDER
    reserved = len(render(meta)) + HEADER_SLACK
    reserved += (8 - reserved % 8) % 8
    h = hashlib.sha256()
    with atomic_path(path) as tmp:
        with open_temp(tmp) as f:
            f.write(b"\0" * (8 + reserved))
            for k in order:
                t = produce(k)
                if not isinstance(t, torch.Tensor):
                    raise CuError(f"tensor {k!r} is not a torch.Tensor")
                dtype, shape = specs[k]
                if str(t.dtype) != "torch." + _TORCH_DTYPES[dtype] or list(t.shape) != \
                        entries[k]["shape"]:
                    raise CuError(f"internal: tensor {k} is {t.dtype} {tuple(t.shape)}, "
                                  f"announced {dtype} {tuple(shape)}")
                bad = nonfinite_count(t)
                if bad:
                    raise CuError(f"refusing to write {path or 'the output'}: tensor {k} has "
                                  f"{bad} non-finite value(s) (NaN/inf); nothing written")
                raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
                h.update(raw)
                f.write(raw)
                del t, raw
            payload = "sha256:" + h.hexdigest()
            if finalize is not None:
                meta.update(encode_metadata(finalize()))
                meta.pop(HEADER_HASH_KEY, None)
            head = render(meta)
            if len(head) > reserved:
                raise CuError(f"internal: the header of {path} outgrew the {HEADER_SLACK} bytes "
                              "reserved for it")
            f.seek(0)
            f.write(struct.pack("<Q", reserved))
            f.write(head + b" " * (reserved - len(head)))
            f.flush()
    return payload


def load_tensors(path: str, keys: list[str] | None = None, device: str = "cpu") -> dict:
    """Load (some) tensors of a safetensors file; a NaN/inf value is refused (exit 3, naming the
    key), so no command ever computes with, scores or copies one."""
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(path, framework="pt", device=device) as f:
            for k in keys if keys is not None else list(f.keys()):
                out[k] = f.get_tensor(k)
    except OSError as e:
        raise read_error(e, path)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise IncompatibleError(f"{path}: cannot read tensors ({(str(e).splitlines() or [''])[0]})")
    for k, v in out.items():
        bad = nonfinite_count(v)
        if bad:
            raise IncompatibleError(f"{path}: tensor {k} has {bad} non-finite value(s) "
                                    "(NaN/inf); refusing to use it")
    return out
