"""``cu export``: diffusers folders, CompVis single files and LoRAs reload bit-exactly / within 1e-5.

Tiny sd1/sd2 pipelines (tests/tiny.py) and the built-in MiniCanvas. The states touch UNet K/V and a
convolution, a text-encoder projection and a VAE mid-block attention weight (the 1×1-conv reshape),
so every component's key table is exercised.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest
import torch

from cu_cli.cli.app import app
from cu_cli.ckpt.format import load_tensors, read_header
from cu_cli.models.base import resolve_base
from tests.helpers import kv_keys, make_ckpt

CONV = "unet.down_blocks.0.resnets.0.conv1.weight"
TEXT = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight"
VAE_ATTN = "vae.encoder.mid_block.attentions.0.to_q.weight"


def _deltas(base, keys, scale=0.02, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = base.shapes()
    return {k: torch.randn(shapes[k], generator=g) * scale for k in keys}


@pytest.fixture(scope="module")
def states(tiny_sd1, tiny_sd2, tmp_path_factory):
    """family -> (base folder, state with UNet/text/VAE keys, UNet-only state)."""
    out = {}
    for family, folder in (("sd1", tiny_sd1), ("sd2", tiny_sd2)):
        base = resolve_base(folder)
        d = tmp_path_factory.mktemp(f"export-{family}")
        full = make_ckpt(d / "full.safetensors", base,
                         _deltas(base, kv_keys(base)[:6] + [CONV, TEXT, VAE_ATTN]), ["cat"])
        unet = make_ckpt(d / "unet.safetensors", base, _deltas(base, kv_keys(base)[:6] + [CONV]),
                         ["cat"])
        out[family] = (folder, full, unet)
    return out


def _pipe(folder):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True,
                                                   safety_checker=None)


def _module_state(pipe, comp):
    from cu_cli.ckpt.keys import canonical_key

    return {canonical_key(comp, n): t for n, t in getattr(pipe, comp).state_dict().items()}


def _expected(base_folder, state):
    """canonical key -> base + state for every component tensor."""
    base = resolve_base(base_folder)
    ref = base.get_tensors(sorted(base.shapes()))
    ref.update(load_tensors(state))
    return ref


def _assert_bit_exact(pipe, expected, comps=("unet", "vae", "text_encoder")):
    n = 0
    for comp in comps:
        got = _module_state(pipe, comp)
        want = {k: v for k, v in expected.items() if k.startswith(comp + ".")}
        assert set(got) == set(want), comp
        for k, v in want.items():
            assert torch.equal(got[k], v), k
            n += 1
    assert n > 100


def _data_sha256(path) -> str:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n)
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------------------------ diffusers folder
@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_diffusers_export_reloads_bit_exact(runner, states, tmp_path, family):
    folder, state, _ = states[family]
    out = tmp_path / "exported"
    r = runner.invoke(app, ["export", "diffusers", state, "--base", folder, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{out}\n"
    _assert_bit_exact(_pipe(str(out)), _expected(folder, state))
    side = json.load(open(out / "cu.json"))
    assert side["cu"]["cu.erased"] == ["cat"] and side["cu"]["cu.kind"] == "export"
    assert side["state"]["payload_sha256"] == read_header(state).metadata["cu.payload_sha256"]
    assert side["modelspec"]["sai_model_spec"] == "1.0.0"
    # the scheduler and tokenizer are the base's, byte for byte
    for rel in ("scheduler/scheduler_config.json", "model_index.json"):
        assert open(out / rel).read() == open(os.path.join(folder, rel)).read()


def test_diffusers_export_sdxl_bit_exact(runner, tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    base = resolve_base(tiny_sdxl)
    te2 = "text_encoder_2.text_model.encoder.layers.1.mlp.fc1.weight"
    state = make_ckpt(tmp_path / "xl.safetensors", base,
                      _deltas(base, kv_keys(base)[:4] + [CONV, TEXT, te2, VAE_ATTN]), ["cat"])
    out = tmp_path / "xl-export"
    r = runner.invoke(app, ["export", "diffusers", state, "--base", tiny_sdxl, "-o", str(out)])
    assert r.exit_code == 0, r.output
    pipe = StableDiffusionXLPipeline.from_pretrained(str(out), local_files_only=True)
    _assert_bit_exact(pipe, _expected(tiny_sdxl, state),
                      comps=("unet", "vae", "text_encoder", "text_encoder_2"))


def test_diffusers_export_minicanvas_bit_exact(runner, tmp_path):
    base = resolve_base("minicanvas")
    state = make_ckpt(tmp_path / "mc.safetensors", base, _deltas(base, kv_keys(base)), ["x"])
    out = tmp_path / "mc-export"
    r = runner.invoke(app, ["export", "diffusers", state, "-o", str(out)])
    assert r.exit_code == 0, r.output
    pipe = _pipe(str(out))
    _assert_bit_exact(pipe, _expected(base.path, state))
    # the exported tokenizer still tells prompts apart (the code-built CLIPTokenizer pitfall)
    a, b = (pipe.tokenizer(p).input_ids for p in ("a star in neon stripes style",
                                                  "a moon in ember style"))
    assert a != b


def test_diffusers_export_from_a_single_file_base(runner, states, tmp_path):
    """--base F --base-config DIR: loaded with from_single_file, saved with save_pretrained."""
    from safetensors.torch import save_file

    from cu_cli.export.single_file import compvis_state

    folder, state, _ = states["sd1"]
    sd, _ = compvis_state(resolve_base(folder), {})
    save_file(sd, str(tmp_path / "base.safetensors"))
    out = tmp_path / "from-single"
    r = runner.invoke(app, ["export", "diffusers", state, "--base", str(tmp_path / "base.safetensors"),
                            "--base-config", folder, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "cu.json").exists()
    _assert_bit_exact(_pipe(str(out)), _expected(folder, state))


def test_diffusers_export_refuses_existing_and_foreign_folders(runner, states, tmp_path):
    folder, state, _ = states["sd1"]
    out = tmp_path / "e"
    assert runner.invoke(app, ["export", "diffusers", state, "--base", folder, "-o",
                               str(out)]).exit_code == 0
    r = runner.invoke(app, ["export", "diffusers", state, "--base", folder, "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert runner.invoke(app, ["export", "diffusers", state, "--base", folder, "-o", str(out),
                               "--force"]).exit_code == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    r = runner.invoke(app, ["export", "diffusers", state, "--base", folder, "-o", str(foreign),
                            "--force"])
    assert r.exit_code == 2 and "cu.json" in r.stderr
    r = runner.invoke(app, ["export", "diffusers", state, "--base", folder, "-o",
                            os.path.join(folder, "unet")])
    assert r.exit_code == 2
    assert not [p for p in os.listdir(tmp_path) if ".cu-tmp-" in p]


# ------------------------------------------------------------------------------ single file
# the text-encoder marker key diffusers' from_single_file detects each family's encoder by
# (sd1: with text_model., the transformers >= 5.6 pitfall; sd2: OpenCLIP's token embedding)
TEXT_MARKER = {
    "sd1": "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    "sd2": "cond_stage_model.model.token_embedding.weight"}
TEXT_ROOT = {"sd1": "cond_stage_model.transformer.text_model.", "sd2": "cond_stage_model.model."}


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_single_file_reloads_bit_exact(runner, states, tmp_path, family):
    """sd2's state changes a q_proj weight: the reload splits the fused OpenCLIP in_proj back."""
    from diffusers import StableDiffusionPipeline

    folder, state, _ = states[family]
    out = tmp_path / "model.safetensors"
    r = runner.invoke(app, ["export", "single-file", state, "--base", folder, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{out}\n"
    h = read_header(str(out))
    assert TEXT_MARKER[family] in h.tensors
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in h.tensors
    assert h.tensors["first_stage_model.encoder.mid.attn_1.q.weight"]["shape"][2:] == [1, 1]
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", TEXT_ROOT[family]))
               for k in h.tensors)
    assert h.metadata["modelspec.hash_sha256"] == "0x" + _data_sha256(out)
    assert h.metadata["modelspec.architecture"].startswith("stable-diffusion-v")
    assert json.loads(h.metadata["cu.erased"]) == ["cat"]
    pipe = StableDiffusionPipeline.from_single_file(str(out), config=folder, local_files_only=True,
                                                    safety_checker=None)
    _assert_bit_exact(pipe, _expected(folder, state))


def test_single_file_sd2_openclip_layout(runner, states, tmp_path):
    """SD2's text encoder as in the original SD2 checkpoints (cond_stage_model.model.*, OpenCLIP):
    fused q/k/v in_proj, ln_1/ln_2, c_fc/c_proj, ln_final; no HF CLIP key, no text_projection
    (the HF SD2 CLIPTextModel has none)."""
    folder, state, _ = states["sd2"]
    out = tmp_path / "sd2.safetensors"
    r = runner.invoke(app, ["export", "single-file", state, "--base", folder, "-o", str(out)])
    assert r.exit_code == 0, r.output
    keys = read_header(str(out)).tensors
    oc = "cond_stage_model.model."
    assert keys[oc + "transformer.resblocks.0.attn.in_proj_weight"]["shape"] == [48, 16]
    assert keys[oc + "transformer.resblocks.1.attn.in_proj_bias"]["shape"] == [48]
    for part in ("ln_1.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_proj.bias",
                 "attn.out_proj.weight"):
        assert oc + "transformer.resblocks.1." + part in keys, part
    for k in ("positional_embedding", "token_embedding.weight", "ln_final.weight"):
        assert oc + k in keys, k
    assert oc + "text_projection" not in keys
    assert not any(k.startswith("cond_stage_model.transformer.") for k in keys)
    text = {k for k in resolve_base(folder).shapes() if k.startswith("text_encoder.")}
    assert sum(k.startswith(oc) for k in keys) == len(text) - 2 * 2 * 2  # q/k/v -> in_proj


def test_open_clip_state_prefix_and_position_ids():
    """open_clip_state writes under the given prefix (either key spelling in) and drops the
    position_ids buffer older HF text-encoder files carry."""
    from cu_cli.ckpt.compvis import open_clip_state

    w = {p: torch.full((4, 2), i, dtype=torch.float32) for i, p in enumerate("qkv")}
    tensors = {f"encoder.layers.0.self_attn.{p}_proj.weight": t for p, t in w.items()}
    tensors["embeddings.position_ids"] = torch.arange(3)[None]
    tensors["text_model.final_layer_norm.bias"] = torch.zeros(2)
    out = open_clip_state(tensors, "cond_stage_model.model.")
    assert sorted(out) == ["cond_stage_model.model.ln_final.bias",
                           "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    fused = out["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(fused, torch.cat([w["q"], w["k"], w["v"]]))


def test_single_file_minicanvas_reloads_bit_exact(runner, tmp_path):
    """MiniCanvas: 3 blocks, one layer per block, attention-less first up block (the generalised
    CompVis table, not SD1's hard-coded 4 × 2)."""
    from diffusers import StableDiffusionPipeline

    base = resolve_base("minicanvas")
    state = make_ckpt(tmp_path / "mc.safetensors", base,
                      _deltas(base, kv_keys(base) + [CONV, TEXT, VAE_ATTN]), ["x"])
    out = tmp_path / "mc-sd.safetensors"
    r = runner.invoke(app, ["export", "single-file", state, "-o", str(out)])
    assert r.exit_code == 0, r.output
    pipe = StableDiffusionPipeline.from_single_file(str(out), config=base.path,
                                                    local_files_only=True, safety_checker=None)
    _assert_bit_exact(pipe, _expected(base.path, state))


def test_single_file_sdxl_reloads_bit_exact(runner, tiny_sdxl_sgm, tmp_path):
    """The SGM layout: label_emb, conditioner.embedders.0 (HF CLIP) and .1 (OpenCLIP, fused q/k/v,
    transposed text_projection). The ``tiny_sdxl_sgm`` base has SDXL's block topology and a wider
    text_encoder_2: diffusers' ``from_single_file`` picks the encoder of
    ``conditioner.embedders.0`` for text_encoder_2 too when the two have one width, so the
    equal-width ``tiny_sdxl`` cannot round-trip its second encoder."""
    from diffusers import StableDiffusionXLPipeline

    folder = tiny_sdxl_sgm
    base = resolve_base(folder)
    te2 = ["text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj.weight",
           "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.weight",
           "text_encoder_2.text_model.text_projection.weight"]
    conv = "unet.down_blocks.1.resnets.0.conv1.weight"
    state = make_ckpt(tmp_path / "xl.safetensors", base,
                      _deltas(base, kv_keys(base)[:6] + [conv, TEXT, VAE_ATTN] + te2), ["cat"])
    out = tmp_path / "xl.single.safetensors"
    r = runner.invoke(app, ["export", "single-file", state, "--base", folder, "-o", str(out)])
    assert r.exit_code == 0, r.output
    h = read_header(str(out))
    oc = "conditioner.embedders.1.model."
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.",
                             "conditioner.embedders.0.transformer.text_model.", oc))
               for k in h.tensors)
    assert "model.diffusion_model.label_emb.0.0.weight" in h.tensors
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in h.tensors)
    assert h.tensors[oc + "transformer.resblocks.1.attn.in_proj_weight"]["shape"] == [72, 24]
    assert h.tensors[oc + "text_projection"]["shape"] == [24, 24]
    assert oc + "positional_embedding" in h.tensors and oc + "ln_final.weight" in h.tensors
    assert h.metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    pipe = StableDiffusionXLPipeline.from_single_file(str(out), config=folder,
                                                      local_files_only=True)
    _assert_bit_exact(pipe, _expected(folder, state),
                      comps=("unet", "vae", "text_encoder", "text_encoder_2"))


def test_single_file_sdxl_equal_width_encoders_export(runner, tiny_sdxl, tmp_path):
    base = resolve_base(tiny_sdxl)
    state = make_ckpt(tmp_path / "x.safetensors", base, _deltas(base, kv_keys(base)[:2]))
    out = tmp_path / "o.safetensors"
    r = runner.invoke(app, ["export", "single-file", state, "--base", tiny_sdxl, "-o", str(out)])
    assert r.exit_code == 0, r.output
    keys = read_header(str(out)).tensors
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias" in keys
    assert len(keys) == len(base.shapes()) - 2 * 2 * 2  # q/k/v weight+bias -> in_proj, 2 layers


def test_export_wrong_base_exit_3(runner, states, tmp_path):
    _, state, _ = states["sd1"]
    r = runner.invoke(app, ["export", "single-file", state, "--base", "minicanvas", "-o",
                            str(tmp_path / "o.safetensors")])
    assert r.exit_code == 3


# ------------------------------------------------------------------------------ LoRA
def _fuse(pipe_or_unet_state, lora_path, comp="unet"):
    """W + (α/r)·B·A from a peft-style file, α/r from lora_adapter_metadata (what fuse_lora adds)."""
    t = load_tensors(lora_path)
    meta = json.loads(read_header(lora_path).metadata["lora_adapter_metadata"])
    out = {}
    for k in t:
        if not k.endswith(".lora_A.weight"):
            continue
        module = k[len(comp) + 1: -len(".lora_A.weight")]
        a, b = t[k], t[k.replace("lora_A", "lora_B")]
        r = a.shape[0]
        alpha = meta[f"{comp}.alpha_pattern"].get(module, meta[f"{comp}.lora_alpha"])
        rr = meta[f"{comp}.rank_pattern"].get(module, meta[f"{comp}.r"])
        assert rr == r
        w = pipe_or_unet_state[f"{module}.weight"]
        assert w.shape[:2] == (b.shape[0], a.shape[1])
        out[f"{comp}.{module}.weight"] = w + (alpha / r) * (
            b.reshape(b.shape[0], -1) @ a.reshape(r, -1)).reshape(w.shape)
    return out


def test_lora_peft_full_rank_matches_state(runner, states, tmp_path):
    from diffusers import StableDiffusionPipeline

    folder, _, state = states["sd1"]
    out = tmp_path / "peft.safetensors"
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--rank", "full",
                            "--style", "peft", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{out}\n"
    assert "worst reconstruction error" in r.stderr and "energy" in r.stderr
    # diffusers reads it as its own (peft) format: nothing renamed, no alphas
    sd, alphas = StableDiffusionPipeline.lora_state_dict(str(out))
    assert set(sd) == set(load_tensors(str(out))) and not alphas
    base_unet = {n: t for n, t in _pipe(folder).unet.state_dict().items()}
    fused = _fuse(base_unet, str(out))
    want = load_tensors(state)
    assert set(fused) == set(want)
    for k, v in want.items():
        assert (fused[k] - v).abs().max() < 1e-5, k
        assert (v - base_unet[k[5:]]).abs().max() > 1e-3  # the test can fail: Δ is not tiny


def test_lora_peft_load_lora_weights_and_fuse(runner, states, tmp_path):
    pytest.importorskip("peft")
    folder, _, state = states["sd1"]
    out = tmp_path / "peft.safetensors"
    assert runner.invoke(app, ["export", "lora", state, "--base", folder, "--rank", "full",
                               "-o", str(out)]).exit_code == 0
    pipe = _pipe(folder)
    pipe.load_lora_weights(str(out))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    got = pipe.unet.state_dict()
    for k, v in load_tensors(state).items():
        assert (got[k[5:]] - v).abs().max() < 1e-5, k


def test_lora_kohya_keys_convert_to_the_peft_export(runner, states, tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft

    folder, _, state = states["sd1"]
    kohya, peft = tmp_path / "k.safetensors", tmp_path / "p.safetensors"
    for style, path in (("kohya", kohya), ("peft", peft)):
        r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--rank", "2",
                                "--style", style, "-o", str(path)])
        assert r.exit_code == 0, r.output
    kt = load_tensors(str(kohya))
    assert all(k.startswith("lora_unet_") for k in kt)
    assert all(float(v) == 2.0 for k, v in kt.items() if k.endswith(".alpha"))
    sd, alphas = StableDiffusionPipeline.lora_state_dict(str(kohya))  # kohya detected, converted
    unet = convert_unet_state_dict_to_peft({k[5:]: v for k, v in sd.items()})
    want = {k[5:]: v for k, v in load_tensors(str(peft)).items()}
    assert set(unet) == set(want)
    for k, v in want.items():
        assert torch.equal(unet[k], v), k
    assert set(alphas.values()) == {2.0}


def test_kohya_names_of_every_unet_module_convert_back(tiny_sd1):
    """Every Linear/Conv2d of an SD1 UNet: kohya name -> diffusers' converter -> same module."""
    import torch.nn as nn
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
    from diffusers.utils import convert_unet_state_dict_to_peft

    from cu_cli.export.lora import kohya_name

    unet = _pipe(tiny_sd1).unet
    mods = [n for n, m in unet.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    sd = {}
    for m in mods:
        name = kohya_name("unet", m)
        sd[f"{name}.lora_down.weight"] = torch.zeros(1)
        sd[f"{name}.lora_up.weight"] = torch.zeros(1)
        sd[f"{name}.alpha"] = torch.tensor(1.0)
    conv, _ = _convert_non_diffusers_lora_to_diffusers(sd)
    peft = convert_unet_state_dict_to_peft({k[5:]: v for k, v in conv.items()})
    back = sorted({k.rsplit(".lora_", 1)[0] for k in peft})
    assert back == sorted(mods)


def test_lora_rank_energy_and_diff(runner, states, tmp_path):
    folder, _, state = states["sd1"]
    base = resolve_base(folder)
    want = load_tensors(state)
    ref = base.get_tensors(sorted(want))
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--rank", "1", "--json",
                            "-o", str(tmp_path / "r1.safetensors")])
    rep = json.loads(r.stdout)
    assert all(x["rank"] == 1 and x["energy"] < 1 for x in rep["per_tensor"])
    assert rep["worst"]["rel_error"] > 0.1
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--energy", "0.9",
                            "--json", "-o", str(tmp_path / "e.safetensors")])
    rep = json.loads(r.stdout)
    assert all(x["energy"] >= 0.9 and x["rank"] <= x["full_rank"] for x in rep["per_tensor"])
    assert any(x["rank"] < x["full_rank"] for x in rep["per_tensor"])
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--style", "diff", "-o",
                            str(tmp_path / "d.safetensors")])
    assert r.exit_code == 0, r.output
    d = load_tensors(str(tmp_path / "d.safetensors"))
    from cu_cli.export.lora import kohya_name, module_of

    for k, v in want.items():
        comp, module, _ = module_of(k)
        assert torch.equal(d[f"{kohya_name(comp, module)}.diff"], v - ref[k].float())


@pytest.mark.parametrize("args", [[], ["--rank", "2", "--energy", "0.5"], ["--rank", "0"],
                                  ["--rank", "two"], ["--energy", "1.5"], ["--energy", "nan"],
                                  ["--style", "lycoris", "--rank", "2"],
                                  ["--style", "diff", "--rank", "2"]])
def test_lora_usage_errors_exit_2(runner, states, tmp_path, args):
    folder, _, state = states["sd1"]
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, *args, "-o",
                            str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "x.safetensors").exists()


def test_lora_refuses_a_changed_bias(runner, states, tmp_path):
    folder, _, _ = states["sd1"]
    base = resolve_base(folder)
    bias = kv_keys(base)[0].replace("to_k.weight", "to_out.0.bias")
    state = make_ckpt(tmp_path / "b.safetensors", base, _deltas(base, [bias]))
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--rank", "2", "-o",
                            str(tmp_path / "x.safetensors")])
    assert r.exit_code == 3 and "--style diff" in r.stderr
    r = runner.invoke(app, ["export", "lora", state, "--base", folder, "--style", "diff", "-o",
                            str(tmp_path / "x.safetensors")])
    assert r.exit_code == 0
    assert any(k.endswith(".diff_b") for k in load_tensors(str(tmp_path / "x.safetensors")))


def test_export_is_not_a_state(runner, states, tmp_path):
    """An export's header says cu.kind=export: applying it as a state is refused (exit 3)."""
    folder, _, state = states["sd1"]
    out = tmp_path / "l.safetensors"
    assert runner.invoke(app, ["export", "lora", state, "--base", folder, "--rank", "1", "-o",
                               str(out)]).exit_code == 0
    r = runner.invoke(app, ["export", "lora", str(out), "--base", folder, "--rank", "1", "-o",
                            str(tmp_path / "again.safetensors")])
    assert r.exit_code == 3
