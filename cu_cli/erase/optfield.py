"""Declared erase options: one ``opt()`` per field carries its help text, CLI exposure and checks.

Every consumer is derived from these declarations — the ``cu erase`` flags and their ``--help``
text (cli/config_options.py), YAML keys (the field names), ``--set key=value``, ``docs/cli.md``
(generated from ``--help``) and the error messages (:func:`label`) — so an option is described in
exactly one place (mergekit's ``add_merge_options`` pattern). Defaults that depend on the method
or the base live in the defaults registry (erase/defaults.py), never in help strings.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, field

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class OptSpec:
    """What a field declares beyond its default."""

    help: str
    type: type  # int | float | bool | str
    flag: bool = True  # a ``--kebab-name`` flag (else only YAML / ``--set``)
    choices: tuple[str, ...] | None = None
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    nullable: bool = False  # None is a legal resolved value (e.g. clip: none)
    # An option added after plans were recorded: the value that reproduces cu before it existed.
    # A config with this value keeps the plan key it had without the field (erase/plan.py), so
    # adding an option does not invalidate existing chains.
    neutral: object = None


def opt(default, help: str, type: type, **spec) -> Field:
    """A dataclass field with an :class:`OptSpec` in its metadata. ``default=None`` means
    "filled by the defaults registry" unless ``nullable``."""
    return field(default=default, metadata={"opt": OptSpec(help=help, type=type, **spec)})


def spec_of(f: Field) -> OptSpec:
    return f.metadata["opt"]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def label(name: str, specs: dict[str, OptSpec]) -> str:
    """How the user spells an option: ``--lr`` for flags, ``--set clip=…`` otherwise."""
    s = specs.get(name)
    return flag_name(name) if s is None or s.flag else f"--set {name}=…"


def coerce(name: str, value, s: OptSpec, where: str):
    """Convert a YAML / ``--set`` value to the declared type; a clear usage error otherwise.
    Strings that spell a number are numbers (YAML 1.1 reads ``3e-4`` as a string)."""
    from cu_cli._util.errors import UsageError

    def bad(why: str):
        return UsageError(f"{where}: {why}")

    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("none", "null", "~") and (
            s.type is not str or s.nullable):
        return None  # "none" is a value of text options such as --preserve none
    if s.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad(f"expected true or false, got {value!r}")
    if s.type is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise bad(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise bad(f"expected an integer, got {value!r}")
    if s.type is float:
        if isinstance(value, bool):
            raise bad(f"expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise bad(f"expected a number, got {value!r}")
        if not math.isfinite(out):
            raise bad(f"must be a finite number, got {value!r}")
        return out
    if not isinstance(value, str):
        raise bad(f"expected text, got {value!r}")
    return value


def check(name: str, value, s: OptSpec, where: str) -> None:
    """The declared range/choice checks on a resolved value."""
    from cu_cli._util.errors import UsageError

    if value is None:
        if not s.nullable:
            raise UsageError(f"{where}: no value and no default for this base and method")
        return
    if s.choices is not None and value not in s.choices:
        raise UsageError(f"{where} {value!r}: choose one of {', '.join(s.choices)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number")
    if s.ge is not None and value < s.ge:
        raise UsageError(f"{where} must be >= {s.ge:g}")
    if s.gt is not None and value <= s.gt:
        raise UsageError(f"{where} must be > {s.gt:g}")
    if s.le is not None and value > s.le:
        raise UsageError(f"{where} must be <= {s.le:g}")


def field_default(f: Field):
    return None if f.default is MISSING else f.default


def spell(v, exact: bool = True) -> str:
    """An option value as text: ``exact`` parses back to the same value (``--set``, YAML);
    otherwise short for display (``--help``)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if exact else f"{v:g}"
    if v == "" and not exact:
        return "''"
    return str(v)
