"""Unlearning objectives as a registry: name -> class with ``prepare(ctx)`` and ``loss(ctx, step)``."""

from cu_cli.erase.objectives import conabl, erasediff, esd


def _entry(module, cls) -> dict:
    return {"cls": cls, "doc": module.__doc__.strip().splitlines()[0], "url": cls.url}


ERASE_OBJECTIVES = {
    "conabl": _entry(conabl, conabl.ConAbl),
    "esd": _entry(esd, esd.ESD),
    "erasediff": _entry(erasediff, erasediff.EraseDiff),
}
