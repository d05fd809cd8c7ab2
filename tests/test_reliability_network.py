"""Issue 14 item 4: no classifier loader reaches the network; Hub ids and Hub-needing configs are
refused with a clear CuError (sockets stay disabled by pytest-socket)."""

from __future__ import annotations

import pytest

from cu_cli._util.errors import CuError
from cu_cli.cli.app import app
from cu_cli.models.classifiers import CLASSIFIERS, load_image_classifier

HUB_IDS = ["hf-hub:org/some-model", "https://example.com/model.pt", "someorg/somemodel"]


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("hub", HUB_IDS)
def test_every_registered_loader_refuses_a_hub_id(name, hub, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    spec = f"{name}:{hub}:{weights}" if name == "clip" else f"{name}:{hub}"
    with pytest.raises(CuError) as e:
        load_image_classifier(spec, "style", ["a", "b"])
    assert e.value.exit_code in (1, 2)
    assert "never downloads" in str(e.value) or "Hub" in str(e.value)


def test_clip_model_whose_text_tower_is_on_the_hub_is_refused(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not used")
    with pytest.raises(CuError, match="hf_model_name"):
        load_image_classifier(f"clip:xlm-roberta-base-ViT-B-32:{weights}", "style", ["a"])


def test_clip_local_dir_config_needing_the_hub_is_refused(tmp_path):
    import json

    d = tmp_path / "m"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 1, "width": 8,
                                       "patch_size": 16},
        "text_cfg": {"hf_model_name": "roberta-base", "hf_tokenizer_name": "roberta-base"}}}))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    with pytest.raises(CuError, match="Hub"):
        load_image_classifier(f"clip:local-dir:{d}:{weights}", "style", ["a"])


def test_eval_cli_reports_it_cleanly(runner, tiny_sd1, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    r = runner.invoke(app, ["eval", "--base", tiny_sd1, "--protocol", "unlearncanvas-object",
                            "--erased", "Bears", "--seeds", "1", "--steps", "1", "--classifier",
                            f"clip:xlm-roberta-base-ViT-B-32:{weights}", "-q"])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("Error:") and "internal error" not in r.stderr
