"""Which prompts the retained-token penalty (ops/preserve.py) keeps fixed during an erase.

``preserve`` is ``none``, ``file`` (the prompts come from ``--preserve FILE``) or ``world`` (the
base's world chooses: for MiniCanvas every caption whose object and style are neither a target of
this request nor in its protocol retain sets — held out on purpose, so that ``cu eval``'s RA
measures how the penalty generalises to concepts it never saw; see
``World.preserve_prompts``). Previously erased concepts are *not* excluded: keeping their prompts'
keys/values at the parent's (erased) state stops a new request from undoing them.
"""

from __future__ import annotations

from cu_cli._util.errors import UsageError


def preserve_prompts(mode: str, targets: list[str], world,
                     file_prompts: list[str] | None) -> list[str]:
    if mode == "none":
        return []
    if mode == "file":
        if not file_prompts:
            raise UsageError("--preserve FILE: the file has no prompts")
        return list(dict.fromkeys(file_prompts))
    if mode != "world":
        raise UsageError(f"preserve {mode!r}: use world, none or a file of prompts")
    if world is None:
        raise UsageError("--preserve world needs a built-in world base (MiniCanvas); give a "
                         "file of prompts")
    return world.preserve_prompts(targets)


def names_any(prompt: str, concepts: list[str]) -> bool:
    """Whether ``prompt`` names one of ``concepts`` as whole words (case-insensitive)."""
    import re

    low = prompt.lower()
    spellings = {v for c in concepts for v in (c.lower(), c.lower().replace("_", " "))}
    return any(re.search(r"(?<!\w)" + re.escape(c) + r"(?!\w)", low) for c in spellings)
