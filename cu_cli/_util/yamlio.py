"""The one safe YAML loader for config files: no aliases/anchors, bounded size, one-line errors.

``yaml.safe_load`` accepts aliases, so a few hundred bytes of nested anchors (a "billion laughs"
bomb) expand to gigabytes. :func:`load_yaml_mapping` composes with a ``SafeLoader`` subclass that
refuses any anchor or alias, refuses files over :data:`MAX_BYTES`, non-UTF-8 text and a top level
that is not a mapping, and raises :class:`UsageError` (exit 2) with a short message quoting the
file and the line.
"""

from __future__ import annotations

import os

from cu_cli._util.errors import UsageError

MAX_BYTES = 1 << 20  # 1 MiB: configs are a few hundred bytes
MAX_DEPTH = 32  # nesting of mappings/sequences


def _loader_class():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """SafeLoader that refuses anchors, aliases and deep nesting while composing."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                raise _Refused("aliases (*name) are not allowed", event.start_mark)
            if getattr(event, "anchor", None) is not None:
                raise _Refused("anchors (&name) are not allowed", event.start_mark)
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > MAX_DEPTH:
                    raise _Refused(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return NoAliasLoader


class _Refused(Exception):
    def __init__(self, what: str, mark):
        super().__init__(what)
        self.what, self.mark = what, mark


def _where(mark) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def load_yaml_mapping(path: str, what: str = "--config") -> dict:
    """Parse ``path`` as a YAML mapping (an empty file is ``{}``); ``UsageError`` on any problem.

    ``what`` names the option or role in messages, e.g. ``"--config"``.
    """
    import yaml

    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise UsageError(f"{what} {path}: file too large ({size} bytes; limit {MAX_BYTES})")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UsageError(f"{what} {path}: {e.strerror or e}")
    if len(raw) > MAX_BYTES:
        raise UsageError(f"{what} {path}: file too large (limit {MAX_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {path}: not UTF-8 text (byte {e.start})")
    loader = None
    try:
        loader = _loader_class()(text)
        data = loader.get_single_data()
    except _Refused as e:
        raise UsageError(f"{what} {path}: {e.what}{_where(e.mark)}")
    except yaml.MarkedYAMLError as e:
        problem = (e.problem or e.context or "syntax error").strip()
        raise UsageError(f"{what} {path}: invalid YAML{_where(e.problem_mark)}: {problem}")
    except yaml.YAMLError as e:
        raise UsageError(f"{what} {path}: invalid YAML ({(str(e).splitlines() or ['?'])[0]})")
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # odd scalars, e.g. dates
        raise UsageError(f"{what} {path}: invalid value ({type(e).__name__}: "
                         f"{(str(e).splitlines() or ['?'])[0][:80]})")
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path}: the top level must be a mapping of keys, "
                         f"got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise UsageError(f"{what} {path}: key {str(bad[0])[:40]!r} is not a string")
    return data
