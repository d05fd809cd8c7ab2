"""Bounded hypothesis fuzzing (issue 14): the safetensors header reader, the YAML loader and
``clean_concept`` raise nothing but ``CuError`` subclasses, whatever the input."""

from __future__ import annotations

import json
import os
import struct
import tempfile
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.text import clean_concept, safe_text
from cu_cli._util.yamlio import load_yaml_mapping
from cu_cli.ckpt.format import read_cu_header, read_header

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids,
                                                             max_size=4),
    max_leaves=12)
entry = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "F16", "I8", "BOOL", "X", 3]) | json_values,
    "shape": st.lists(st.integers(-3, 40), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-10, 300), min_size=0, max_size=3) | json_values})
headers = st.dictionaries(st.text(max_size=12), entry | json_values, max_size=4).map(
    lambda d: d) | st.builds(
    lambda t, m: {**t, "__metadata__": m},
    st.dictionaries(st.text(max_size=8), entry, max_size=3),
    st.dictionaries(st.sampled_from(["format", "cu.format_version", "cu.kind", "cu.erased",
                                     "cu.parents", "cu.lineage", "cu.header_sha256",
                                     "cu.dtype", "x"]), st.text(max_size=12) | json_values,
                    max_size=6))


def _tmp_file(blob: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return path


def _only_cu_errors(fn, path):
    try:
        fn(path)
    except CuError:
        pass
    finally:
        os.remove(path)


@FUZZ
@given(st.binary(max_size=300))
def test_header_reader_on_random_bytes(blob):
    _only_cu_errors(read_cu_header, _tmp_file(blob))


@FUZZ
@given(headers, st.binary(max_size=200), st.integers(-8, 8))
def test_header_reader_on_structured_headers(header, data, skew):
    raw = json.dumps(header).encode()
    n = max(0, len(raw) + skew)
    _only_cu_errors(read_header, _tmp_file(struct.pack("<Q", n) + raw + data))
    _only_cu_errors(read_cu_header, _tmp_file(struct.pack("<Q", len(raw)) + raw + data))


yaml_text = st.text(alphabet=st.sampled_from(list("ab:-&*[]{}!|>'\"#?,. \n\t0123%@`~")),
                    max_size=120) | st.text(max_size=80)


@FUZZ
@given(yaml_text)
def test_yaml_loader_never_raises_anything_else(text):
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    try:
        assert isinstance(load_yaml_mapping(path, "--config"), dict)
    except UsageError as e:
        assert "\n" not in str(e)
    finally:
        os.remove(path)


@FUZZ
@given(st.text(max_size=60) | st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Mn",
                                                                          "Ll"]), max_size=20))
def test_clean_concept_only_usage_errors_and_idempotent(s):
    try:
        out = clean_concept(s)
    except UsageError as e:
        assert "\n" not in str(e) and "\x1b" not in str(e)
        return
    assert out and out == out.strip() and unicodedata.is_normalized("NFC", out)
    assert clean_concept(out) == out
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in out)


@FUZZ
@given(st.text(max_size=60))
def test_safe_text_output_is_printable(s):
    assert all(c.isprintable() for c in safe_text(s))
