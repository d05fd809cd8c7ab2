"""Pictures for ``cu eval``: metrics along a chain (matplotlib) and a labelled base-vs-state sheet."""

from __future__ import annotations

import numpy as np

from cu_cli._util.fs import atomic_path


def plot_chain(result: dict, out: str) -> None:
    """UA / RA-I / RA-C vs request (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    states = result["states"]
    xs = list(range(len(states)))
    labels = ["base" if s["path"] is None else str(i) for i, s in enumerate(states)]
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=120)
    for key, name, style in (("ua", "UA", "o-"), ("ra_i", "RA-I", "s-"), ("ra_c", "RA-C", "^-")):
        ys = [s["metrics"][key] if s["metrics"][key] is not None else np.nan for s in states]
        ax.plot(xs, ys, style, label=name)
    ax.set_xticks(xs, labels)
    ax.set_xlabel("state (request)")
    ax.set_ylabel("%")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"{result['protocol']} on {result['base']}")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], col_labels: list[str], out: str,
                  cell: int = 96) -> None:
    """Rows of images with a label column and a header row (PNG)."""
    from PIL import Image, ImageDraw

    label_w, head_h, pad = 150, 28, 4
    ncol = max(len(r[1]) for r in rows)
    W = label_w + ncol * (cell + pad) + pad
    H = head_h + len(rows) * (cell + pad) + pad
    sheet = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(sheet)
    for j, lab in enumerate(col_labels):
        draw.text((label_w + pad + j * (cell + pad), 6), lab[:18], fill="black")
    for i, (lab, imgs) in enumerate(rows):
        y = head_h + pad + i * (cell + pad)
        draw.text((6, y + cell // 2 - 6), lab[:22], fill="black")
        for j, img in enumerate(imgs):
            tile = Image.fromarray(img).resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_w + pad + j * (cell + pad), y))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
