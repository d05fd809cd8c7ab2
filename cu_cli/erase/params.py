"""Erase configuration: one frozen dataclass, YAML keys = field names, CLI flags override.

``None`` means "the default for this method and base" (:func:`resolve`): the reference scripts'
values on real SD bases (method-notes §2–§4) and measured MiniCanvas values on the built-in world
(docs/erase.md says how they were chosen). The resolved config is stored in the lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from cu_cli._util.errors import UsageError

METHODS = ("conabl", "esd", "erasediff")
KINDS = ("style", "object", "celebrity", "custom")


@dataclass(frozen=True)
class EraseConfig:
    method: str = "conabl"  # conabl | esd | erasediff
    kind: str | None = None  # style | object | celebrity | custom (MiniCanvas: inferred)
    anchor: str | None = None  # anchor concept (ConAbl/EraseDiff); default per kind / world map
    params: str = "kv-xattn"  # trainable group (models/groups.py)
    steps: int | None = None  # optimizer steps
    lr: float | None = None  # learning rate
    batch: int | None = None  # samples per step
    l1: float = 0.0  # L1-SP weight λ₁ (method-notes §5)
    l2: float = 0.0  # L2-SP weight λ₂
    reg_ref: str = "parent"  # parent | base: θ^ref of the SP penalties
    preserve: str | None = None  # none | world | file: retained-token K/V penalty prompts
    # (erase/preserve.py); default world on MiniCanvas, none elsewhere
    preserve_weight: float | None = None  # its weight λ_p (ops/preserve.py)
    context_weight: float | None = None  # request-context K/V penalty weight λ_c
    # (erase/context_tokens.py); default 4 for MiniCanvas ConAbl, 0 otherwise
    selft_topk: float | None = None  # SelFT fraction k of trainable weights kept (None = off)
    selft_scoring: str = "trajectory"  # trajectory (one 50-step path per pair) | reference
    selft_timesteps: int | None = None  # timesteps scored (evenly spaced subset of the 50-step
    # schedule); default 50 on SD (reference), 10 on MiniCanvas (keeps scoring <= 15 % of a request)
    selft_pairs: int | None = None  # (target, anchor) pairs scored; default 2 MiniCanvas, 1 else
    selft_remask: bool = False  # re-apply the SelFT mask after projection (cu extension)
    free_target: str = "none"  # with --basis: the target's directions removed from C before P
    # is built (erase/freeing.py): none (the reference) | concept
    project_update: bool = False  # exact W ← W_prev + ΔW·P after each step (cu extension)
    clip: float | None = None  # grad-norm clip; default 1.0 ConAbl, none for ESD/EraseDiff
    weight_decay: float | None = None  # AdamW decay; default 0.01 ConAbl, 0 otherwise
    negative_guidance: float | None = None  # ESD η; default 1.0
    conabl_eta: float | None = None  # ConAbl: negative guidance of the target by the parent
    # (objectives/conabl.py; a cu extension): default 0.05 for MiniCanvas, 0 (reference) otherwise
    start_guidance: float = 3.0  # ESD/SelFT CFG scale when sampling x_k
    ddim_steps: int = 50  # ESD/SelFT schedule length
    match: str = "word"  # word | substring: anchor-word replacement (reference = substring)
    anchor_images: int | None = None  # ConAbl anchor images; default 128 MiniCanvas, 200 else
    anchor_steps: int | None = None  # sampler steps for anchor images
    anchor_guidance: float | None = None  # CFG for anchor images
    detach_bos: bool = True  # ConAbl: BOS token K/V detached (Custom Diffusion processor)
    mask_border: int | None = None  # ConAbl loss mask border (latent px); 1 SD, 0 MiniCanvas
    hflip: bool | None = None  # random horizontal flips of anchor latents; on SD, off MiniCanvas
    erasediff_cycles: int = 5  # EraseDiff outer cycles (steps = cycles · steps_per_cycle)
    erasediff_inner: bool = True  # run the (gradient-inert) inner phase
    erasediff_k: int = 2  # inner rounds
    erasediff_lambda: float = 0.1  # λ_bome
    erasediff_remain_weight: float = 1.0  # w_r (reference 0.0)
    save_dtype: str = "float32"  # stored dtype; lower precision warns (conventions §2)

    def to_dict(self) -> dict:
        return asdict(self)


FIELD_NAMES = {f.name for f in fields(EraseConfig)}

# Measured defaults (docs/erase.md): MiniCanvas, per method.
MINICANVAS_DEFAULTS = {
    "conabl": dict(steps=120, lr=6e-4, batch=16, clip=1.0, weight_decay=0.01, anchor_images=128,
                   anchor_steps=25, anchor_guidance=7.5, mask_border=0, hflip=False,
                   context_weight=4.0, conabl_eta=0.05),
    "esd": dict(steps=150, lr=2e-4, batch=8, clip=None, weight_decay=0.0, negative_guidance=1.0,
                anchor_images=0, anchor_steps=25, anchor_guidance=7.5, mask_border=0, hflip=False),
    "erasediff": dict(steps=120, lr=4e-4, batch=16, clip=None, weight_decay=0.0,
                      anchor_images=128, anchor_steps=25, anchor_guidance=7.5, mask_border=0,
                      hflip=False),
}
# Retained-token penalty weight (measured on MiniCanvas, docs/erase.md; untuned on SD).
PRESERVE_WEIGHT = 0.25
# The reference scripts' SD1.x values (method-notes §2–§4).
SD_DEFAULTS = {
    "conabl": dict(steps=1000, lr=8e-6, batch=4, clip=1.0, weight_decay=0.01, anchor_images=200,
                   anchor_steps=100, anchor_guidance=6.0, mask_border=1, hflip=True),
    "esd": dict(steps=1000, lr=1e-5, batch=1, clip=None, weight_decay=0.0, negative_guidance=1.0,
                anchor_images=0, anchor_steps=50, anchor_guidance=6.0, mask_border=1, hflip=True),
    "erasediff": dict(steps=500, lr=1e-5, batch=4, clip=None, weight_decay=0.0, anchor_images=200,
                      anchor_steps=100, anchor_guidance=6.0, mask_border=1, hflip=True),
}


def load_yaml(path: str) -> dict:
    """Read a YAML config; unknown keys are a usage error."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: invalid YAML ({str(e).splitlines()[0]})")
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    return data


def build_config(yaml_values: dict, overrides: dict, allowed_extra: set[str] = frozenset()) -> tuple:
    """Merge YAML then CLI overrides (``None`` = not given); returns (config, extra keys)."""
    unknown = set(yaml_values) - FIELD_NAMES - allowed_extra
    if unknown:
        raise UsageError(f"unknown config keys: {', '.join(sorted(unknown))}")
    values = {k: v for k, v in yaml_values.items() if k in FIELD_NAMES}
    values.update({k: v for k, v in overrides.items() if v is not None and k in FIELD_NAMES})
    extra = {k: v for k, v in yaml_values.items() if k in allowed_extra}
    try:
        cfg = EraseConfig(**values)
    except TypeError as e:
        raise UsageError(f"bad config: {e}")
    return cfg, extra


def resolve(cfg: EraseConfig, world: str | None) -> EraseConfig:
    """Fill ``None`` fields with the method's defaults for this base; validate."""
    if cfg.method not in METHODS:
        raise UsageError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    if cfg.kind is not None and cfg.kind not in KINDS:
        raise UsageError(f"--kind {cfg.kind!r}: choose one of {', '.join(KINDS)}")
    if cfg.reg_ref not in ("parent", "base"):
        raise UsageError("--reg-ref must be parent or base")
    if cfg.match not in ("word", "substring"):
        raise UsageError("--match must be word or substring")
    if cfg.free_target not in ("none", "concept"):
        raise UsageError("--free-target must be none or concept")
    if cfg.selft_scoring not in ("trajectory", "reference"):
        raise UsageError("--selft-scoring must be trajectory or reference")
    if cfg.selft_topk is not None and not 0 < cfg.selft_topk <= 1:
        raise UsageError("--selft-topk must be in (0, 1]")
    table = MINICANVAS_DEFAULTS if world == "minicanvas" else SD_DEFAULTS
    fill = {k: v for k, v in table[cfg.method].items() if getattr(cfg, k) is None}
    if cfg.selft_pairs is None:
        fill["selft_pairs"] = 2 if world == "minicanvas" else 1
    if cfg.selft_timesteps is None:
        fill["selft_timesteps"] = 10 if world == "minicanvas" else 50
    if cfg.preserve is None:
        fill["preserve"] = "world" if world == "minicanvas" else "none"
    if cfg.preserve_weight is None:
        fill["preserve_weight"] = PRESERVE_WEIGHT
    for name in ("context_weight", "conabl_eta"):  # cu extensions: off unless a table sets them
        if getattr(cfg, name) is None and name not in fill:
            fill[name] = 0.0
    if cfg.negative_guidance is None:
        fill["negative_guidance"] = 1.0
    if (world != "minicanvas" and cfg.method == "esd" and cfg.lr is None and cfg.params == "esd-u"
            and cfg.kind == "object"):
        fill["lr"] = 5e-6  # the reference's ESD object rate for esd-u (method-notes §3)
    cfg = replace(cfg, **fill)
    for name in ("steps", "batch"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name} must be >= 1")
    if cfg.lr <= 0:
        raise UsageError("--lr must be > 0")
    if min(cfg.l1, cfg.l2, cfg.preserve_weight, cfg.context_weight, cfg.conabl_eta) < 0:
        raise UsageError("--l1/--l2/--preserve-weight/--context-weight/--conabl-eta must be >= 0")
    if cfg.preserve not in ("none", "world", "file"):
        raise UsageError(f"preserve {cfg.preserve!r}: use world or none (or --preserve FILE)")
    for name in ("erasediff_cycles", "erasediff_k", "selft_timesteps", "selft_pairs", "ddim_steps"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"{name} must be >= 1")
    if cfg.method in ("conabl", "erasediff") and cfg.anchor_images < 1:
        raise UsageError("--anchor-images must be >= 1")
    return cfg
