"""Write the hostile-input corpus under ``tests/data/hostile/`` (issue 14).

Every file is small (one 32×64 fp32 tensor of the built-in MiniCanvas base, ≈8 KB) and has exactly
one defect; where the defect is not about the hashes, ``cu.payload_sha256`` and
``cu.header_sha256`` are recomputed so that only that defect remains. ``_valid.safetensors`` is the
undamaged control. ``MANIFEST.json`` lists each case and what it exercises.

    python tools/gen_hostile.py            # rewrites tests/data/hostile/
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "tests", "data", "hostile")
KEY = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"


def _valid() -> tuple[dict, bytes]:
    """A genuine cu checkpoint on the MiniCanvas base: base weights + 0.01, written by cu."""
    import tempfile

    from cu_cli.ckpt.checkpoint import BaseIdentity, write_checkpoint
    from cu_cli.ckpt.lineage import make_step
    from cu_cli.models.base import resolve_base
    from tests.rawst import read_raw

    base = resolve_base("minicanvas")
    t = {KEY: base.get_tensors([KEY])[KEY].float() + 0.01}
    step = make_step("erase", concepts=["Cats"], method="test", argv=["gen_hostile"])
    step["created"] = "2026-01-01T00:00:00+00:00"  # reproducible bytes
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "v.safetensors")
        write_checkpoint(p, t, BaseIdentity("minicanvas", base.arch, base.fingerprint), step)
        header, data = read_raw(p)
    meta = header["__metadata__"]
    meta["cu.created_by"] = "cu_cli gen_hostile"
    lineage = json.loads(meta["cu.lineage"])
    for s in lineage:
        for k in ("versions", "wall_seconds", "peak_memory_mb", "cu_version"):
            s.pop(k, None)
    meta["cu.lineage"] = json.dumps(lineage, sort_keys=True)
    return header, data


def cases() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what it exercises)."""
    from tests.rawst import encode, set_f32

    h, d = _valid()
    valid = encode(h, d)

    def variant(edit=None, data=None, rehash_payload=True, rehash_header=True):
        hh = json.loads(json.dumps(h))
        if edit:
            edit(hh)
        return encode(hh, d if data is None else data, rehash_payload, rehash_header)

    n = struct.unpack("<Q", valid[:8])[0]
    flipped = bytearray(valid)
    flipped[8 + n + 100] ^= 0xFF
    dup = json.dumps({KEY: h[KEY], "__metadata__": h["__metadata__"]}, separators=(",", ":"))
    dup = dup[:-1] + f',"{KEY}":' + json.dumps(h[KEY]) + "}"
    dup_b = dup.encode() + b" " * ((8 - len(dup) % 8) % 8)

    def setm(**kv):
        return lambda hh: hh["__metadata__"].update(kv)

    def half(hh):  # two tensors whose data overlap: the second re-uses the first's bytes
        hh[KEY + "_copy"] = dict(hh[KEY])

    return {
        "_valid": (valid, "control: an undamaged cu checkpoint (must be accepted)"),
        "truncated_header": (valid[:40], "file cut inside the JSON header"),
        "truncated_data": (valid[:-1000], "file cut inside the data section"),
        "flipped_byte": (bytes(flipped), "one data byte flipped (payload hash mismatch)"),
        "oversized_header_len": (struct.pack("<Q", 1 << 62) + valid[8:],
                                 "8-byte header length far beyond the file"),
        "pickle_renamed": (pickle.dumps({"state_dict": {"w": [0.0] * 8}}, protocol=4),
                           "a pickle file renamed .safetensors"),
        "duplicate_keys": (struct.pack("<Q", len(dup_b)) + dup_b + d,
                           "the same tensor name twice in the header JSON"),
        "future_version": (variant(setm(**{"cu.format_version": "2"})),
                           "cu.format_version 2 (newer than this cu)"),
        "overlapping_offsets": (variant(half), "two tensors sharing the same data bytes"),
        "nan_tensor": (variant(data=set_f32(h, d, KEY, 5, float("nan"))), "one NaN weight"),
        "inf_tensor": (variant(data=set_f32(h, d, KEY, 7, float("-inf"))), "one -inf weight"),
        "edited_erased": (variant(setm(**{"cu.erased": json.dumps(["Dogs"])}),
                                  rehash_header=False),
                          "cu.erased edited by hand (header hash not updated)"),
        "wrong_dtype": (variant(lambda hh: hh[KEY].update(dtype="F16")),
                        "dtype F16 declared over fp32 bytes (byte length mismatch)"),
        "f16_claims_float32": (_f16_variant(h, d, encode),
                               "a real F16 tensor in a file whose header says cu.dtype float32"),
        "transposed_shape": (variant(lambda hh: hh[KEY].update(shape=hh[KEY]["shape"][::-1])),
                             "shape [64, 32] instead of the base's [32, 64]"),
        "other_base": (variant(setm(**{"cu.base.fingerprint": "sha256:" + "0" * 64})),
                       "made from another base (weights fingerprint differs)"),
        "bad_json_erased": (variant(setm(**{"cu.erased": "[\"Cats\""})),
                            "cu.erased is not valid JSON"),
    }


def _f16_variant(h, d, encode) -> bytes:
    import numpy as np

    vals = np.frombuffer(d, dtype="<f4").astype("<f2").tobytes()
    hh = json.loads(json.dumps(h))
    hh[KEY].update(dtype="F16", data_offsets=[0, len(vals)])
    return encode(hh, vals)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(OUT, f))
    manifest = {}
    for name, (blob, what) in sorted(cases().items()):
        with open(os.path.join(OUT, f"{name}.safetensors"), "wb") as f:
            f.write(blob)
        manifest[name] = what
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(manifest)} files to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
