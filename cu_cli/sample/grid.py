"""A labelled image grid (rows × columns) and PNGs with text chunks, written atomically (PIL)."""

from __future__ import annotations

import numpy as np

from cu_cli._util.fs import atomic_path


def save_grid(rows: list[tuple[str, list[np.ndarray]]], col_labels: list[str], out: str,
              cell: int = 128) -> None:
    """Rows of uint8 HxWx3 images, a label column on the left and a header row (PNG); a column
    label's last ``\n``-separated line (the seed) is always shown."""
    from PIL import Image, ImageDraw

    label_w, head_h, pad = 170, 42, 4
    ncol = max(len(imgs) for _, imgs in rows)
    sheet = Image.new("RGB", (label_w + ncol * (cell + pad) + pad,
                              head_h + len(rows) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, lab in enumerate(col_labels):
        x = label_w + pad + j * (cell + pad)
        *text, last = lab.split("\n")
        lines = _wrap(" ".join(text), max(8, cell // 6))[:2] + [last] if text else \
            _wrap(last, max(8, cell // 6))[:3]
        for i, line in enumerate(lines):
            draw.text((x, 2 + 12 * i), line, fill="black")
    for i, (lab, imgs) in enumerate(rows):
        y = head_h + pad + i * (cell + pad)
        for k, line in enumerate(_wrap(lab, 26)[:4]):
            draw.text((6, y + 4 + 12 * k), line, fill="black")
        for j, img in enumerate(imgs):
            tile = Image.fromarray(img).resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_w + pad + j * (cell + pad), y))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")


def save_png(img: np.ndarray, out: str, text: dict[str, str]) -> None:
    """One image with PNG tEXt/iTXt chunks (prompt, seed, lineage hash, …)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in text.items():
        info.add_itxt(k, str(v))
    with atomic_path(out) as tmp:
        Image.fromarray(img).save(tmp, format="PNG", pnginfo=info)


def _wrap(s: str, width: int) -> list[str]:
    words, lines, cur = s.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines or [""]
