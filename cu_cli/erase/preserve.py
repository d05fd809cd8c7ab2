"""Which prompts the retained-token penalty (ops/preserve.py) keeps fixed during an erase.

``preserve`` is ``none``, ``file`` (the prompts come from ``--preserve FILE``) or ``world``
(MiniCanvas): every caption "a {object} in {style} style" and "a {object}" whose object and style
are neither a target of this request nor in the world's protocol retain sets. The retain sets are
held out on purpose, so that ``cu eval``'s RA measures how the penalty generalises to concepts it
never saw, not how well it memorises them. Previously erased concepts are *not* excluded: keeping
their prompts' keys/values at the parent's (erased) state stops a new request from undoing them.
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
        raise UsageError("--preserve world needs the MiniCanvas base; give a file of prompts")
    held_out = (set(targets) | set(world.retain.get("style", []))
                | set(world.retain.get("object", [])))
    objects = [o for o in world.objects if o not in held_out]
    styles = [s for s in world.styles if s not in held_out]
    prompts = [world.caption(o, s) for o in objects for s in styles]
    return prompts + [world.caption(o, None) for o in objects]
