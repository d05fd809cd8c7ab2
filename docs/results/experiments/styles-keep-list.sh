#!/bin/bash
# probe (docs/erase.md, "The word hold" / "a user's keep list"): the world's 12-style chain with
# --preserve FILE, FILE = the world's own preserve prompts for the request (what --preserve world
# holds) + a user's keep list: "a {object} in {style} style" for the 4 styles the owner keeps,
# with the 12 objects that the style protocol does NOT score (no exact evaluation prompt).
# usage: bash styles-keep-list.sh OUT_DIR PRESERVE_WEIGHT      (run from the repository root)
set -euo pipefail
D=$1; W=${2:-1}; mkdir -p "$D"
python - "$D" <<'PY'
import sys
from cu_cli.world.minicanvas import load_world
w, d = load_world(), sys.argv[1]
seq = w.sequences["style"]
keep = [w.caption(o, s) for s in w.styles if s not in seq for o in w.objects
        if o not in w.retain["object"]]
open(f"{d}/seq.txt", "w").write("\n".join(seq) + "\n")
for k, c in enumerate(seq, 1):
    open(f"{d}/p{k:02d}.txt", "w").write("\n".join(w.preserve_prompts([c]) + keep) + "\n")
PY
prev=""; k=0
while read -r C; do
  k=$((k+1)); kk=$(printf %02d $k)
  from=(); [ -n "$prev" ] && from=(--from "$prev")
  cu erase --concept "$C" "${from[@]}" --preserve "$D/p$kk.txt" --preserve-weight "$W" --seed 42 \
     -o "$D/s$kk.safetensors" -q --force </dev/null
  cu eval "$D/s$kk.safetensors" --json </dev/null > "$D/e$kk.json"
  prev=$D/s$kk.safetensors
done < "$D/seq.txt"
