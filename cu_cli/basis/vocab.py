"""Candidate auxiliary concepts for the projection basis (method-notes §7.1).

The reference asks an LLM for 100 style + 100 object prompts per request; cu is offline and expands
packaged vocabularies instead (``cu_cli/data/*.txt``: UnlearnCanvas styles/objects plus common art
styles, objects and generic public-figure categories; or the MiniCanvas world's concepts) and the
user's ``--aux-file`` lines, with the reference templates. Candidates containing the target
(case-insensitive substring, same domain) are dropped, as the reference drops such LLM lines, and
the target itself is never a candidate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from cu_cli._util.errors import UsageError
from cu_cli.world.registry import WORLDS

TEMPLATES = {"style": "An image in the style of {x}", "object": "An image of a {x}",
             "celebrity": "An image of a {x}"}
KINDS = tuple(TEMPLATES)
VOCABS = ("builtin", *WORLDS, "none")  # a world's name: that world's styles and objects
BUILTIN_FILES = {"style": "styles.txt", "object": "objects.txt",
                 "celebrity": "celebrity_categories.txt"}
FULL_PROMPT_WORDS = 6  # an aux line with more words than this is a prompt, not a concept name


@dataclass(frozen=True)
class Candidate:
    """One basis column to be: a concept name and the prompt its embedding is extracted from."""

    concept: str  # raw name as written (or the whole prompt for full-prompt aux lines)
    prompt: str
    domain: str  # style | object | celebrity | prompt (a full prompt: domain unknown); the --top-m
    # split between domains counts the candidate in this one
    source: str  # builtin | minicanvas | aux | erased


def templated(concept: str, kind: str) -> Candidate:
    return Candidate(concept, TEMPLATES[kind].format(x=concept), kind, "builtin")


@lru_cache(maxsize=None)
def read_list(name: str) -> tuple[str, ...]:
    """Lines of a packaged ``cu_cli/data`` file, comments and blanks skipped."""
    text = resources.files("cu_cli").joinpath("data", name).read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def vocab_candidates(vocab: str, world=None) -> list[Candidate]:
    """Template expansion of ``builtin`` (three data files) or of a world's vocabulary (its
    styles and objects; ``world`` is that world); ``none`` gives nothing."""
    if vocab == "builtin":
        return [Candidate(c, TEMPLATES[k].format(x=c), k, "builtin")
                for k, f in BUILTIN_FILES.items() for c in read_list(f)]
    if vocab in WORLDS:
        return ([Candidate(s, TEMPLATES["style"].format(x=s), "style", vocab)
                 for s in world.styles]
                + [Candidate(o, TEMPLATES["object"].format(x=o), "object", vocab)
                   for o in world.objects])
    if vocab == "none":
        return []
    raise UsageError(f"--vocab {vocab!r}: choose one of {', '.join(VOCABS)}")


def is_full_prompt(line: str) -> bool:
    return line.lower().startswith("an image") or len(line.split()) > FULL_PROMPT_WORDS


def aux_candidates(lines: list[str], kind: str) -> list[Candidate]:
    """Aux-file lines: a full prompt as is, otherwise a concept templated by ``kind``'s domain."""
    out = []
    for ln in lines:
        if is_full_prompt(ln):
            out.append(Candidate(ln, ln, "prompt", "aux"))
        else:
            out.append(Candidate(ln, TEMPLATES[kind].format(x=ln), kind, "aux"))
    return out


def read_aux_file(path: str) -> tuple[list[str], str]:
    """(lines, sha256 of the file) — blanks and '#' comments skipped."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"--aux-file {path}: {e.strerror}")
    lines = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines()]
    return ([ln for ln in lines if ln and not ln.startswith("#")],
            "sha256:" + hashlib.sha256(raw).hexdigest())


def infer_kind(target: str, world=None) -> str | None:
    """style/object from the world's lists, else from the built-in lists; None when unknown."""
    t = target.strip().lower()
    if world is not None:
        if t in (s.lower() for s in world.styles):
            return "style"
        if t in (o.lower() for o in world.objects):
            return "object"
        return None
    for k, f in BUILTIN_FILES.items():
        if t in (c.lower() for c in read_list(f)):
            return k
    return None


def excluded(c: Candidate, target: str, kind: str) -> bool:
    """The target itself, or a same-domain candidate containing it (full prompts: any)."""
    t = target.strip().lower()
    if c.concept.lower() == t or c.prompt.lower() == TEMPLATES[kind].format(x=target).lower():
        return True
    return c.domain in (kind, "prompt") and t in c.concept.lower()


def prompt_key(prompt: str) -> str:
    """Prompts that tokenize alike compare equal (CLIP's tokenizer lower-cases, splits on space)."""
    return " ".join(prompt.lower().split())


def unique(cands: list[Candidate]) -> list[Candidate]:
    """First occurrence of each prompt (by :func:`prompt_key`)."""
    seen, out = set(), []
    for c in cands:
        key = prompt_key(c.prompt)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
