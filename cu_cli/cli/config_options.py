"""CLI flags generated from declared options (mergekit's ``add_merge_options`` pattern).

:func:`with_config_options` appends one Typer option per declared field to a command's
signature — name, type and ``--help`` text from the field's ``OptSpec``, defaults described by the
defaults registry — and hands the given values to the command as ``config_flags``. So a new
option, a changed help text or a changed default reaches ``--help`` and ``docs/cli.md`` from one
place.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Callable, Optional

import typer

_TYPES = {int: Optional[int], float: Optional[float], str: Optional[str], bool: Optional[bool]}


def option_help(spec, default_text: str) -> str:
    text = spec.help
    if spec.choices:
        text += " Choices: " + " | ".join(spec.choices) + "."
    return f"{text} ({default_text})" if default_text else text


def with_config_options(specs: dict, names: list[str], describe: Callable[[str], str]):
    """Decorator: add ``--<name>`` options for ``names``; the command gets ``config_flags``."""

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)  # real annotations: Typer reads them
        kept = [p for n, p in sig.parameters.items() if n != "config_flags"]
        added = []
        for n in names:
            s = specs[n]
            decl = "--" + n.replace("_", "-")
            if s.type is bool:
                decl += "/--no-" + n.replace("_", "-")
            ann = Annotated[_TYPES[s.type], typer.Option(decl, help=option_help(s, describe(n)))]
            added.append(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=ann))

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            flags = {n: kwargs.pop(n, None) for n in names}
            return fn(*args, config_flags=flags, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept] + added
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco
