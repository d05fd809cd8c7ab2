"""Bases: built-in worlds, diffusers folders and single-file SD checkpoints, always offline.

A :class:`Base` knows where its component weights live, so single keys can be read with
``safe_open`` (drift, merge, fingerprints) without loading a pipeline, and it loads the full
pipeline with ``local_files_only=True`` when a command needs to run the model. Family detection
(sd1 / sd2 / sdxl) reads configs only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources

from cu_cli._util.errors import CuError, IncompatibleError, UsageError
from cu_cli.ckpt.fingerprint import arch_hash, weight_fingerprint
from cu_cli.ckpt.keys import canonical_key, split_key

DEFAULT_BASE = "minicanvas"
FINGERPRINT_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "vae")
_WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
VARIANTS = ("", "fp16")  # full precision preferred; a folder of fp16 variants only loads too


def assets_dir() -> str:
    return str(resources.files("cu_cli").joinpath("assets"))


BUILTIN_BASES: dict[str, dict] = {
    "minicanvas": {
        "doc": "MiniCanvas: 16 objects x 16 styles, 32x32, tiny SD1-topology pipeline trained by cu "
               "(see docs/minicanvas.md).",
        "subdir": "minicanvas",
        "world": "minicanvas",
    },
}


@dataclass
class Base:
    """A resolved base model (no weights loaded until asked)."""

    id: str
    kind: str  # "builtin" | "diffusers" | "single-file"
    path: str  # diffusers folder (for single files: the config folder)
    family: str
    world: str | None = None
    single_file: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # component -> weights file or shard index
    parts: dict[str, list] = field(default_factory=dict)  # component -> every safetensors file
    variant: str | None = None  # "fp16" when the folder holds fp16 variant files only
    _pipeline: object = None
    _state: dict | None = None  # canonical key -> tensor (single-file bases only)

    # ---------------------------------------------------------------- weights without a pipeline
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical key -> shape of every fingerprinted component tensor (headers only)."""
        if self.single_file:
            return {k: tuple(v.shape) for k, v in self._single_state().items()}
        from cu_cli.ckpt.format import read_header

        out = {}
        for comp, paths in self.parts.items():
            for path in paths:
                for name, info in read_header(path).tensors.items():
                    out[canonical_key(comp, name)] = tuple(info["shape"])
        return out

    def get_tensors(self, keys: list[str]) -> dict:
        """Read the named canonical keys (fp32 is not forced) from the base files."""
        if self.single_file:
            state = self._single_state()
            missing = [k for k in keys if k not in state]
            if missing:
                raise IncompatibleError(f"base {self.id} has no tensor {missing[0]}")
            return {k: state[k] for k in keys}
        from safetensors import safe_open

        by_comp: dict[str, list[str]] = {}
        for k in keys:
            try:
                comp, _ = split_key(k)
            except KeyError:
                raise IncompatibleError(f"unknown component prefix in key {k!r}")
            if comp not in self.files:
                raise IncompatibleError(f"base {self.id} has no component {comp!r} (key {k})")
            by_comp.setdefault(comp, []).append(k)
        out = {}
        for comp, ks in by_comp.items():
            todo = set(ks)
            for path in self.parts[comp]:
                with safe_open(path, framework="pt") as f:
                    names = {canonical_key(comp, n): n for n in f.keys()}
                    for k in [k for k in todo if k in names]:
                        out[k] = f.get_tensor(names[k])
                        todo.discard(k)
            if todo:
                raise IncompatibleError(f"base {self.id} has no tensor {sorted(todo)[0]}")
        return {k: out[k] for k in keys}

    @property
    def arch(self) -> str:
        return arch_hash(self.shapes())

    @property
    def fingerprint(self) -> str:
        """Weight fingerprint, cached under ``$XDG_CACHE_HOME/cu/`` keyed by file stats."""
        srcs = [self.single_file] if self.single_file else \
            sorted(p for ps in self.parts.values() for p in ps)
        stat_key = hashlib.sha256(json.dumps(
            [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in srcs]
        ).encode()).hexdigest()
        cache = os.path.join(_cache_dir(), "fingerprints.json")
        known = _read_cache_json(cache)
        if stat_key in known:
            _remember_base(known[stat_key], self)
            return known[stat_key]
        keys = list(self.shapes())
        if self.single_file:
            state = self._single_state()
            fp = weight_fingerprint(keys, state.__getitem__)
        else:
            fp = _folder_fingerprint(self, keys)
        known[stat_key] = fp
        _remember_base(fp, self)
        _write_cache_json(cache, known)
        return fp

    # ---------------------------------------------------------------- full pipeline
    def load_pipeline(self, device: str = "cpu", dtype: str = "fp32", keep=None):
        """Load every component offline (fp32, on the CPU), store the frozen parts in ``dtype``
        (``keep``: canonical keys, or a function of the UNet giving them, that stay fp32), then
        move to ``device``; cached on the object."""
        from cu_cli.models.precision import cast_frozen

        if self._pipeline is not None and self._pipeline.dtype != dtype:
            self._pipeline = None  # a lower precision cannot be undone: reload
        if self._pipeline is None:
            pipe = _load_pipeline(self)
            cast_frozen(pipe, dtype, set(keep(pipe.unet) if callable(keep) else keep or ()))
            self._pipeline = pipe
        if str(self._pipeline.device) != str(device):
            self._pipeline.to(device)
        return self._pipeline

    def _single_state(self) -> dict:
        if self._state is None:
            pipe = self.load_pipeline()
            state = {}
            for comp in FINGERPRINT_COMPONENTS:
                mod = getattr(pipe, comp, None)
                if mod is None:
                    continue
                for n, t in mod.state_dict().items():  # a copy: training must not alias it
                    state[canonical_key(comp, n)] = t.detach().cpu().clone()
            self._state = state
        return self._state

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "path": self.path, "family": self.family,
                "world": self.world, "components": sorted(self.files) if self.files else None,
                "variant": self.variant}


def _folder_fingerprint(base: Base, keys: list[str]) -> str:
    from safetensors import safe_open

    handles, names = {}, {}
    try:
        for comp, paths in base.parts.items():
            for path in paths:
                f = safe_open(path, framework="pt")
                handles[path] = f.__enter__()
                for n in handles[path].keys():
                    names[canonical_key(comp, n)] = (path, n)
        return weight_fingerprint(keys, lambda k: handles[names[k][0]].get_tensor(names[k][1]))
    finally:
        for f in handles.values():
            f.__exit__(None, None, None)


def _cache_dir() -> str:
    from cu_cli._util.fs import cache_root

    return cache_root()


def _remember_base(fingerprint: str, base: Base) -> None:
    """fingerprint -> absolute location of every base seen here (``base_for_states`` finds a
    state's base by fingerprint when the recorded path does not exist from this directory)."""
    path = os.path.join(_cache_dir(), "bases.json")
    known = _read_cache_json(path)
    where = {"id": base.id, "base_config": base.path if base.single_file else None}
    if known.get(fingerprint) == where:
        return
    known[fingerprint] = where
    _write_cache_json(path, known)


def _known_base(fingerprint: str | None) -> dict | None:
    where = _read_cache_json(os.path.join(_cache_dir(), "bases.json")).get(fingerprint or "")
    return where if isinstance(where, dict) and os.path.exists(str(where.get("id"))) else None


def _shards(d: str, index: str) -> list[str] | None:
    try:
        with open(os.path.join(d, index)) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise CuError(f"{os.path.join(d, index)}: unreadable shard index")
    missing = [n for n in files if not os.path.exists(os.path.join(d, n))]
    if missing:
        raise CuError(f"{d}: shard {missing[0]} named in {index} is missing")
    return [os.path.join(d, n) for n in files]


def _component_files(folder: str, comp: str, variant: str) -> tuple[str, list[str]] | None:
    """(primary file, every safetensors file) of ``comp`` in one layout: a single file, or a shard
    index (``<stem>.safetensors.index.json``); ``variant`` "fp16" reads ``<stem>.fp16.…`` names."""
    d = os.path.join(folder, comp)
    v = f".{variant}" if variant else ""
    for stem in _WEIGHT_STEMS:
        p = os.path.join(d, f"{stem}{v}.safetensors")
        if os.path.exists(p):
            return p, [p]
        index = f"{stem}.safetensors.index{v}.json"
        if os.path.exists(os.path.join(d, index)):
            return os.path.join(d, index), _shards(d, index)
    return None


def detect_family(folder: str) -> str:
    """sd1 / sd2 / sdxl from ``model_index.json`` and the UNet config (models/families.py)."""
    try:
        with open(os.path.join(folder, "model_index.json")) as f:
            index = json.load(f)
        with open(os.path.join(folder, "unet", "config.json")) as f:
            unet = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CuError(f"{folder}: not a diffusers folder ({e})")
    sched = {}
    try:
        with open(os.path.join(folder, "scheduler", "scheduler_config.json")) as f:
            sched = json.load(f)
    except (OSError, json.JSONDecodeError):
        pass
    from cu_cli.models.families import detect

    return detect(index, unet, sched)


def resolve_base(spec: str | None = None, base_config: str | None = None) -> Base:
    """Turn ``--base`` (a built-in name, a diffusers folder or a single file) into a :class:`Base`."""
    spec = spec or DEFAULT_BASE
    if spec in BUILTIN_BASES:
        info = BUILTIN_BASES[spec]
        folder = os.path.join(assets_dir(), info["subdir"], "pipeline")
        if not os.path.exists(os.path.join(folder, "model_index.json")):
            raise CuError(f"built-in base {spec!r} has no weights in this install ({folder})",
                          hint="reinstall cu, or train it: python -m cu_cli.minicanvas.train")
        return _folder_base(spec, folder, kind="builtin", world=info["world"])
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "model_index.json")):
            raise CuError(f"{spec}: folder has no model_index.json (not a diffusers pipeline)")
        return _folder_base(os.path.abspath(spec), spec, kind="diffusers")
    if os.path.isfile(spec):
        if not base_config:
            raise UsageError(f"{spec} is a single-file checkpoint; pass --base-config DIR "
                             "(a diffusers folder with the matching configs)")
        if not os.path.isdir(base_config):
            raise CuError(f"--base-config {base_config}: no such folder")
        return Base(id=os.path.abspath(spec), kind="single-file", path=os.path.abspath(base_config),
                    family=detect_family(base_config), single_file=spec)
    if "/" in spec and not spec.startswith((".", "/")):
        raise CuError(f"--base {spec}: looks like a Hub id; cu never downloads",
                      hint="download the model yourself and pass its local folder")
    raise CuError(f"--base {spec}: no such built-in base, folder or file "
                  f"(built-ins: {', '.join(BUILTIN_BASES)})")


def _folder_base(base_id: str, folder: str, kind: str, world: str | None = None) -> Base:
    """A diffusers folder: full-precision files, else fp16 variants (one layout for all)."""
    for variant in VARIANTS:
        found = {c: f for c in FINGERPRINT_COMPONENTS if (f := _component_files(folder, c, variant))}
        if "unet" in found:
            break
    else:
        raise CuError(f"{folder}: no unet/diffusion_pytorch_model[.fp16].safetensors or shard "
                      "index (cu reads safetensors only)")
    return Base(id=base_id, kind=kind, path=os.path.abspath(folder), family=detect_family(folder),
                world=world, files={c: f[0] for c, f in found.items()},
                parts={c: f[1] for c, f in found.items()}, variant=variant or None)


def quiet_libraries() -> None:
    """Silence diffusers/transformers progress bars and advice on stderr (cu has its own)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _load_pipeline(base: Base):
    """Every component in fp32 on the CPU (fp16 weights are upcast on load)."""
    import diffusers
    import torch

    quiet_libraries()

    from cu_cli.models.families import get_family
    from cu_cli.models.pipeline import Pipeline

    fam = get_family(base.family)
    cls = getattr(diffusers, fam.pipeline_class)
    kwargs = dict(local_files_only=True, dtype=torch.float32, **fam.load_kwargs())
    try:
        if base.single_file:
            pipe = cls.from_single_file(base.single_file, config=base.path, **kwargs)
        else:
            pipe = cls.from_pretrained(base.path, use_safetensors=True, variant=base.variant,
                                       **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        raise CuError(f"cannot load base {base.id}: {str(e).splitlines()[0]}")
    return Pipeline(
        tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, unet=pipe.unet, vae=pipe.vae,
        scheduler_config=dict(pipe.scheduler.config), family=base.family,
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
        text_encoder_2=getattr(pipe, "text_encoder_2", None),
    ).eval_mode()


def base_for_states(paths: list[str], spec: str | None = None,
                    base_config: str | None = None) -> Base:
    """``--base`` if given, else the base named in the first state's header (checked later by
    fingerprint, never assumed)."""
    if spec:
        return resolve_base(spec, base_config)
    if not paths:
        return resolve_base(None, base_config)
    from cu_cli.ckpt.format import read_cu_header

    h = read_cu_header(paths[0])
    base_id = h.metadata.get("cu.base.id")
    if not base_id:
        raise UsageError(f"{paths[0]} names no base; pass --base")
    if base_id in BUILTIN_BASES or os.path.exists(base_id):
        return resolve_base(base_id, base_config)
    known = _known_base(h.metadata.get("cu.base.fingerprint"))  # seen here under another path
    if known:
        return resolve_base(known["id"], base_config or known.get("base_config"))
    raise CuError(f"{paths[0]} was made from base {base_id!r}, which is not on this machine",
                  hint="pass --base PATH to the same base")


def _read_cache_json(path: str) -> dict:
    """A small JSON cache's contents; {} when it is missing, unreadable or not an object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _write_cache_json(path: str, obj: dict) -> None:
    """Best-effort atomic write of a small JSON cache (an unwritable cache only costs time)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except OSError:
        pass
