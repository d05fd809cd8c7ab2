"""Issue 14 item 6: concept strings are cleaned on the way in and escaped on the way out."""

from __future__ import annotations

import json

import pytest
import torch

from cu_cli._util.errors import UsageError
from cu_cli._util.text import clean_concept, safe_text
from cu_cli.cli.app import app


@pytest.mark.parametrize("s,cp", [
    ("Van\nGogh", "U+000A"), ("a\x1b[31mred", "U+001B"), ("abc\u202edcba", "U+202E"),
    ("zero\u200bwidth", "U+200B"), ("bom\ufeff", "U+FEFF"), ("tab\there", "U+0009"),
    ("line\u2028sep", "U+2028"), ("nul\x00", "U+0000"),
])
def test_clean_concept_refuses_invisible_and_control_characters(s, cp):
    with pytest.raises(UsageError, match=cp.replace("+", r"\+")) as e:
        clean_concept(s)
    assert e.value.exit_code == 2 and "\n" not in str(e.value) and "\x1b" not in str(e.value)


def test_clean_concept_normalises_and_strips():
    assert clean_concept("  Cafe\u0301 ") == "Caf\u00e9"  # NFC
    assert clean_concept("Van Gogh") == "Van Gogh"
    assert clean_concept("葛飾北斎") == "葛飾北斎"
    for empty in ("", "   ", "\u3000"):
        with pytest.raises(UsageError, match="empty"):
            clean_concept(empty)
    with pytest.raises(UsageError, match="characters long"):
        clean_concept("x" * 10_000)


def test_safe_text_escapes_for_display():
    assert safe_text("a\x1b[2Jb\nc\u202e") == "a\\x1b[2Jb\\x0ac\\u202e"
    assert safe_text("Van Gogh, café") == "Van Gogh, café"


def test_cli_concept_options_are_cleaned(runner, tiny_sd1, tmp_path):
    r = runner.invoke(app, ["project-basis", "--base", tiny_sd1, "--concept", "cat\u200b",
                            "-o", str(tmp_path / "b.safetensors")])
    assert r.exit_code == 2 and "U+200B" in r.stderr
    r = runner.invoke(app, ["eval", "--base", tiny_sd1, "--erased", "Bears\x1b[0m"])
    assert r.exit_code == 2 and "U+001B" in r.stderr and "\x1b" not in r.stderr
    f = tmp_path / "retain.txt"
    f.write_text("Bears\nBi\u202eds\n")
    r = runner.invoke(app, ["eval", "--base", tiny_sd1, "--erased", "Cats",
                            "--retain-file", str(f)])
    assert r.exit_code == 2 and "line 2" in r.stderr and "U+202E" in r.stderr


@pytest.fixture()
def hostile_erased(tiny_sd1, tmp_path):
    """A checkpoint made by someone else with escape sequences in its cu.erased (hashes valid)."""
    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt
    from tests.rawst import read_raw, write_raw

    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    p = make_ckpt(tmp_path / "a.safetensors", base, {k: torch.zeros(1)}, ["cat"])
    header, data = read_raw(p)
    evil = ["\x1b[2J\x1b[Hpwned", "ok\u202etxt.exe", "two\nlines"]
    header["__metadata__"]["cu.erased"] = json.dumps(evil)
    return write_raw(tmp_path / "evil.safetensors", header, data), evil


def test_inspect_and_drift_print_escaped_concepts(runner, tiny_sd1, hostile_erased):
    path, evil = hostile_erased
    for args in (["inspect", path], ["drift", path, "--base", tiny_sd1, "--per-layer", "0"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
        assert "\\x1b[2J" in r.stdout and "\\u202e" in r.stdout
        assert "two\\x0alines" in r.stdout
    r = runner.invoke(app, ["inspect", path, "--json"])
    assert json.loads(r.stdout)["erased"] == evil  # JSON keeps the data, escaped by json
    assert "\x1b" not in r.stdout
