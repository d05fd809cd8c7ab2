"""Concept strings in, any text out: refuse invisible/control characters, escape on display.

:func:`clean_concept` is applied to every concept a user gives (``--concept``, ``--erased``,
concept files): NFC-normalised and stripped; control characters (Unicode category Cc), format
characters (Cf: bidi overrides/isolates, zero-width space/joiners, BOM, soft hyphen, …), line/paragraph
separators and unassigned/private/surrogate code points are refused with a :class:`UsageError`
naming the code point; an empty concept is refused.

:func:`safe_text` is for printing text read from files made by others (``cu.erased``, lineage):
anything non-printable is shown as ``\\u202e``-style escapes, so a header cannot move the cursor,
recolour the terminal or reorder a line.
"""

from __future__ import annotations

import unicodedata

from cu_cli._util.errors import UsageError

MAX_CONCEPT_CHARS = 1000
_REFUSED = {"Cc": "control character", "Cf": "invisible format character",
            "Zl": "line separator", "Zp": "paragraph separator", "Co": "private-use character",
            "Cs": "surrogate", "Cn": "unassigned code point"}


def clean_concept(s: str, what: str = "concept") -> str:
    """NFC-normalise and strip ``s``; refuse empty, over-long or invisible/control characters."""
    if not isinstance(s, str):
        raise UsageError(f"{what} must be text, got {type(s).__name__}")
    t = unicodedata.normalize("NFC", s).strip()
    if not t:
        raise UsageError(f"{what} is empty")
    for i, ch in enumerate(t):
        cat = unicodedata.category(ch)
        if cat in _REFUSED:
            name = unicodedata.name(ch, "")
            raise UsageError(f"{what} {safe_text(t[:40])!r} contains {_REFUSED[cat]} "
                             f"U+{ord(ch):04X}{' ' + name if name else ''} at position {i}")
    if len(t) > MAX_CONCEPT_CHARS:
        raise UsageError(f"{what} is {len(t)} characters long (limit {MAX_CONCEPT_CHARS})")
    return t


def safe_text(s) -> str:
    """``s`` as text safe for a terminal: non-printable characters become ``\\xNN``/``\\uNNNN``."""
    s = str(s)
    out = []
    for ch in s:
        if ch == " " or (ch.isprintable() and unicodedata.category(ch) not in _REFUSED):
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def concept_key(name: str) -> str:
    """Spelling-insensitive form of a concept name: case folded, runs of spaces/underscores → _
    (``Van Gogh`` ↔ ``Van_Gogh``)."""
    import re

    return re.sub(r"[\s_]+", "_", name.strip()).casefold()
