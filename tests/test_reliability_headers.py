"""Issue 14 item 3: ``cu.header_sha256`` covers the ``cu.*`` fields; the entry table (offsets,
dtype, shape) is validated; a transposed tensor is a clean exit 3 in drift."""

from __future__ import annotations

import json

import pytest
import torch

from cu_cli._util.errors import IncompatibleError
from cu_cli.cli.app import app
from cu_cli.ckpt.format import header_sha256, read_cu_header, read_header
from tests.rawst import encode, f32_tensors, read_raw, write_raw


@pytest.fixture(scope="module")
def good(tiny_sd1, tmp_path_factory):
    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[:2]
    d = tmp_path_factory.mktemp("headers")
    return make_ckpt(d / "good.safetensors", base,
                     {x: torch.ones(base.shapes()[x]) * 0.01 for x in k}, ["cat"])


def test_header_hash_written_and_canonical(good):
    h = read_cu_header(good)
    assert h.metadata["cu.header_sha256"] == header_sha256(h.metadata)
    assert h.warnings == []
    reordered = dict(reversed(list(h.metadata.items())))
    assert header_sha256(reordered) == header_sha256(h.metadata)


def test_edited_erased_is_refused_everywhere(runner, tiny_sd1, good, tmp_path):
    header, data = read_raw(good)
    header["__metadata__"]["cu.erased"] = json.dumps(["nothing"])
    bad = write_raw(tmp_path / "edited.safetensors", header, data, rehash_header=False)
    before = open(bad, "rb").read()
    out = tmp_path / "m.safetensors"
    for args in (["inspect", bad], ["drift", bad, "--base", tiny_sd1],
                 ["merge", good, bad, "--base", tiny_sd1, "--method", "uniform", "-o", str(out)],
                 ["eval", bad, "--base", tiny_sd1, "--steps", "1", "--seeds", "1"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 3, (args, r.output)
        assert "header_sha256 mismatch" in r.stderr
    assert not out.exists() and open(bad, "rb").read() == before


def test_file_without_header_hash_warns_but_reads(runner, good, tmp_path):
    header, data = read_raw(good)
    del header["__metadata__"]["cu.header_sha256"]
    old = write_raw(tmp_path / "old.safetensors", header, data, rehash_header=False)
    r = runner.invoke(app, ["inspect", old])
    assert r.exit_code == 0, r.output
    assert "older cu" in r.stderr


def _entries_case(tmp_path, name, mutate):
    header, data = f32_tensors({"unet.a": ([2, 2], [1.0] * 4), "unet.b": ([2], [2.0, 3.0])})
    header["__metadata__"] = {"format": "pt", "cu.format_version": "1", "cu.kind": "checkpoint"}
    data = mutate(header, data) or data
    p = tmp_path / f"{name}.safetensors"
    p.write_bytes(encode(header, data))
    return str(p)


CASES = {
    "overlap": (lambda h, d: h["unet.b"].update(data_offsets=[8, 16]), "overlaps"),
    "negative": (lambda h, d: h["unet.a"].update(data_offsets=[-16, 0]), "invalid data_offsets"),
    "out_of_range": (lambda h, d: h["unet.b"].update(data_offsets=[16, 4000]), "beyond"),
    "gap": (lambda h, d: d + b"\0" * 8 if h["unet.b"].update(data_offsets=[24, 32]) is None
            else d, "gap"),
    "trailing": (lambda h, d: d + b"\0" * 4, "unexplained bytes"),
    "dtype_len": (lambda h, d: h["unet.a"].update(dtype="F64"), "span"),
    "shape_len": (lambda h, d: h["unet.a"].update(shape=[3, 2]), "span"),
    "bad_dtype": (lambda h, d: h["unet.a"].update(dtype="Q7"), "unknown dtype"),
    "bad_shape": (lambda h, d: h["unet.a"].update(shape=[2, -2]), "invalid shape"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_entry_table_is_validated(runner, tmp_path, case):
    mutate, needle = CASES[case]
    p = _entries_case(tmp_path, case, mutate)
    with pytest.raises(IncompatibleError, match=needle):
        read_header(p)
    r = runner.invoke(app, ["inspect", p])
    assert r.exit_code == 3 and "[ok]" not in r.stdout and needle in r.stderr


def test_duplicate_json_keys_are_refused(tmp_path):
    header, data = f32_tensors({"unet.a": ([1], [1.0])})
    raw = json.dumps({**header, "__metadata__": {"format": "pt"}})
    raw = raw[:-1] + ', "__metadata__": {"format": "pt", "cu.kind": "basis"}}'
    raw = raw.encode() + b" " * ((8 - len(raw) % 8) % 8)
    p = tmp_path / "dup.safetensors"
    p.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    with pytest.raises(IncompatibleError, match="duplicate key"):
        read_header(str(p))


def test_drift_transposed_shape_is_a_clean_exit_3(runner, tiny_sd1, good, tmp_path):
    header, data = read_raw(good)
    k = next(k for k in header if k != "__metadata__")
    shape = header[k]["shape"]
    assert shape[0] != shape[1]
    header[k]["shape"] = shape[::-1]
    bad = write_raw(tmp_path / "t.safetensors", header, data)
    r = runner.invoke(app, ["drift", bad, "--base", tiny_sd1])
    assert r.exit_code == 3, r.output
    assert "shape" in r.stderr and k in r.stderr and "internal error" not in r.stderr
