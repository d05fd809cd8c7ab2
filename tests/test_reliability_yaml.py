"""Issue 14 item 5: one safe YAML loader (no aliases/anchors, bounded size, one-line errors)."""

from __future__ import annotations

import resource

import pytest

from cu_cli._util.errors import UsageError
from cu_cli._util.yamlio import MAX_BYTES, load_yaml_mapping
from cu_cli.cli.app import app

BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


def test_alias_bomb_is_refused_fast_and_small(tmp_path):
    p = _write(tmp_path, BOMB)
    assert len(BOMB) < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UsageError) as e:
        load_yaml_mapping(p, "--config")
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000  # the old loader took 2.4 GB
    msg = str(e.value)
    assert "anchors" in msg and "line 1" in msg and p in msg and "\n" not in msg
    assert len(msg) < 200 + len(p)


@pytest.mark.parametrize("text,needle", [
    ("a: 1\nb: *x\n", "alias"),  # undefined alias: still refused as an alias
    ("base: &b x\n", "anchors"),
    ("- 1\n- 2\n", "mapping"),
    ("a: [1, 2\n", "line"),
    ("\xff\xfe binary", "UTF-8"),
    ("x: " + "[" * 40 + "]" * 40 + "\n", "nesting"),
    ("? [a, b]\n: 1\n", "line 1"),  # unhashable key
    ("1: a\n", "not a string"),
])
def test_bad_configs_are_one_line_usage_errors(tmp_path, text, needle):
    p = _write(tmp_path, text.encode("latin-1") if text.startswith("\xff") else text)
    with pytest.raises(UsageError, match=needle) as e:
        load_yaml_mapping(p, "--config")
    assert "\n" not in str(e.value) and p in str(e.value)


def test_size_bound(tmp_path):
    p = _write(tmp_path, "a: 1\n" + "#" * MAX_BYTES)
    with pytest.raises(UsageError, match="too large"):
        load_yaml_mapping(p)


def test_plain_configs_load(tmp_path):
    assert load_yaml_mapping(_write(tmp_path, "")) == {}
    assert load_yaml_mapping(_write(tmp_path, "method: ties\nlambda: 1.5\n")) == \
        {"method": "ties", "lambda": 1.5}


def test_merge_config_uses_it(runner, tiny_sd1, tmp_path):
    p = _write(tmp_path, BOMB, "merge.yaml")
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["merge", "--config", p, "--base", tiny_sd1, "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "anchors" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
