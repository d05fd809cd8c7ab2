"""``write_safetensors_stream`` (issue 17): same data section and hashes as ``write_safetensors``,
one tensor alive at a time, readable by safetensors, NaN refused with nothing written."""

from __future__ import annotations

import json
import os

import pytest
import torch


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "b.f16": torch.randn(3, 5, generator=g).half(),
        "a.i64": torch.arange(6).reshape(2, 3),
        "c.f32": torch.randn(4, generator=g),
        "d.bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "e.u8": torch.arange(7, dtype=torch.uint8),
        "f.f64": torch.randn(3, generator=g).double(),
        "g.i32": torch.arange(5, dtype=torch.int32),
        "h.bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "z.f32": torch.randn(2, 3, generator=g).t(),  # not contiguous
    }


META = {"cu.format_version": "1", "cu.kind": "checkpoint", "cu.erased": ["Van Gogh"],
        "cu.lineage": [{"op": "merge", "wall_seconds": 0.0}]}
ST = {torch.float16: "F16", torch.int64: "I64", torch.float32: "F32", torch.bfloat16: "BF16",
      torch.uint8: "U8", torch.float64: "F64", torch.int32: "I32", torch.bool: "BOOL"}


def test_stream_equals_in_memory_write(tmp_path):
    from safetensors import safe_open

    from cu_cli.ckpt.format import (load_tensors, payload_sha256, read_cu_header,
                                    write_safetensors, write_safetensors_stream)

    ts = _tensors()
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    want = write_safetensors(a, ts, META)
    specs = {k: (ST[v.dtype], tuple(v.shape)) for k, v in ts.items()}
    calls = []

    def produce(k):
        calls.append(k)
        return ts[k]

    got = write_safetensors_stream(b, specs, produce, META)
    assert got == want == payload_sha256(b)
    assert sorted(calls) == sorted(ts) and len(calls) == len(ts)
    ha, hb = read_cu_header(a), read_cu_header(b)  # header hash checked
    assert ha.tensors == hb.tensors and ha.metadata == hb.metadata
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(ha.data_start)
        fb.seek(hb.data_start)
        assert fa.read() == fb.read()
    back = load_tensors(b)
    assert all(torch.equal(back[k], ts[k]) for k in ts)
    with safe_open(b, framework="pt") as f:
        assert set(f.keys()) == set(ts)


def test_finalize_rewrites_the_header_over_the_reserved_space(tmp_path):
    from cu_cli.ckpt.format import load_tensors, read_cu_header, write_safetensors_stream

    ts = {"x": torch.ones(3), "y": torch.zeros(2, 2)}
    p = str(tmp_path / "f.safetensors")
    late = {"cu.lineage": [{"op": "merge", "wall_seconds": 123456.789, "peak_memory_mb": 9999.9}]}
    write_safetensors_stream(p, {k: ("F32", tuple(v.shape)) for k, v in ts.items()},
                             ts.__getitem__, META, finalize=lambda: late)
    h = read_cu_header(p)
    assert h.json("cu.lineage") == late["cu.lineage"] and h.data_start % 8 == 0
    assert torch.equal(load_tensors(p)["x"], ts["x"])
    with open(p, "rb") as f:
        f.seek(8)
        json.loads(f.read(h.data_start - 8))  # JSON followed by spaces only


def test_nonfinite_and_wrong_tensor_refused_nothing_written(tmp_path):
    from cu_cli._util.errors import CuError
    from cu_cli.ckpt.format import write_safetensors_stream

    p = tmp_path / "n.safetensors"
    bad = {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}
    specs = {k: ("F32", (2,)) for k in bad}
    with pytest.raises(CuError, match="tensor b has 1 non-finite"):
        write_safetensors_stream(str(p), specs, bad.__getitem__, META)
    with pytest.raises(CuError, match="announced"):
        write_safetensors_stream(str(p), {"a": ("F16", (2,))}, bad.__getitem__, META)
    assert os.listdir(tmp_path) == []
