"""Checkpoint format: round trip, payload hash identity, strictness, corruption, atomic writes."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from cu_cli._util.errors import CuError, IncompatibleError
from cu_cli.ckpt.checkpoint import check_base, open_checkpoint
from cu_cli.ckpt.format import load_tensors, payload_sha256, read_cu_header, write_safetensors
from cu_cli.models.base import resolve_base
from tests.helpers import base_identity, kv_keys, make_ckpt


def _rewrite_header(path: str, out: str, edit) -> None:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    edit(header)
    raw = json.dumps(header, indent=2).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


def test_round_trip_identical_tensors_and_hash(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[:3]
    deltas = {key: torch.randn(base.shapes()[key]) * 0.01 for key in k}
    p = make_ckpt(tmp_path / "a.safetensors", base, deltas)
    h = open_checkpoint(p)
    assert h.payload_sha256 == payload_sha256(p)
    loaded = load_tensors(p)
    ref = base.get_tensors(k)
    for key in k:
        assert torch.equal(loaded[key], ref[key] + deltas[key])
        assert loaded[key].dtype == torch.float32
    # writing the same tensors again gives the same payload hash
    p2 = make_ckpt(tmp_path / "b.safetensors", base, deltas)
    assert open_checkpoint(p2).payload_sha256 == h.payload_sha256


def test_header_rewrite_keeps_payload_hash(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    out = str(tmp_path / "b.safetensors")

    def edit(h):  # key order and JSON layout change; no value does
        h["__metadata__"] = dict(reversed(list(h["__metadata__"].items())))

    _rewrite_header(p, out, edit)
    assert open(p, "rb").read() != open(out, "rb").read()
    assert payload_sha256(out) == payload_sha256(p) == open_checkpoint(out).payload_sha256
    # editing a value is caught by cu.header_sha256 (issue 14)
    _rewrite_header(p, out, lambda h: h["__metadata__"].update({"cu.base.id": "renamed"}))
    with pytest.raises(IncompatibleError, match="header_sha256"):
        open_checkpoint(out)


def test_header_fields(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    a = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)}, ["one"])
    b = make_ckpt(tmp_path / "b.safetensors", base, {kv_keys(base)[1]: torch.ones(1)}, ["two"],
                  parent=a)
    ha, hb = open_checkpoint(a), open_checkpoint(b)
    m = hb.metadata
    assert m["format"] == "pt" and m["cu.format_version"] == "1" and m["cu.kind"] == "checkpoint"
    assert m["cu.base.fingerprint"] == base.fingerprint and m["cu.base.arch"] == base.arch
    assert hb.json("cu.parents") == [ha.payload_sha256]
    assert ha.json("cu.parents") == []
    assert [s["concepts"] for s in hb.json("cu.lineage")] == [["one"], ["two"]]
    assert hb.json("cu.erased") == ["one", "two"]
    assert set(hb.tensors) == {kv_keys(base)[0], kv_keys(base)[1]}  # union of parent and own keys
    step = hb.json("cu.lineage")[-1]
    for field in ("op", "concepts", "method", "params", "seed", "argv", "versions", "created",
                  "wall_seconds", "peak_memory_mb"):
        assert field in step


def test_newer_format_version_is_incompatible(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    out = str(tmp_path / "new.safetensors")
    _rewrite_header(p, out, lambda h: h["__metadata__"].update({"cu.format_version": "2"}))
    with pytest.raises(IncompatibleError, match="newer"):
        read_cu_header(out)


def test_unknown_cu_key_warns(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    out = str(tmp_path / "w.safetensors")
    from cu_cli.ckpt.format import header_sha256

    def edit(h):  # a newer cu writes the key and covers it with the header hash
        h["__metadata__"]["cu.future"] = "x"
        h["__metadata__"]["cu.header_sha256"] = header_sha256(h["__metadata__"])

    _rewrite_header(p, out, edit)
    assert any("cu.future" in w for w in read_cu_header(out).warnings)


@pytest.mark.parametrize("cut", [4, 20, -10])
def test_truncated_files_are_clear_errors(tmp_path, tiny_sd1, cut):
    base = resolve_base(tiny_sd1)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    data = open(p, "rb").read()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:cut])
    with pytest.raises(IncompatibleError, match="truncated|corrupt"):
        open_checkpoint(str(bad))


def test_flipped_payload_byte_fails_verification(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    data = bytearray(open(p, "rb").read())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(IncompatibleError, match="payload hash mismatch"):
        open_checkpoint(str(bad))


def test_base_mismatch_exit3_unless_allowed(tmp_path, tiny_sd1, tiny_sdxl):
    base = resolve_base(tiny_sd1)
    other = resolve_base(tiny_sdxl)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    h = open_checkpoint(p)
    assert check_base(h, base_identity(base)) == []
    with pytest.raises(IncompatibleError) as e:
        check_base(h, base_identity(other))
    assert e.value.exit_code == 3
    assert check_base(h, base_identity(other), allow_mismatch=True)


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import cu_cli._util.fs as fs

    out = tmp_path / "x.safetensors"
    out.write_bytes(b"previous content")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fs.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        write_safetensors(str(out), {"unet.a": torch.ones(2)}, {"cu.kind": "checkpoint"})
    assert out.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_missing_file_is_runtime_error(tmp_path):
    with pytest.raises(CuError) as e:
        open_checkpoint(str(tmp_path / "nope.safetensors"))
    assert e.value.exit_code == 1
    assert os.path.basename(str(tmp_path / "nope.safetensors")) in str(e.value)
