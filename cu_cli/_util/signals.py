"""SIGINT/SIGTERM → :class:`Interrupted`, so an interrupt anywhere exits 130 with temps removed.

Click turns a ``KeyboardInterrupt`` raised outside the command body (while parsing, or while
printing) into "Aborted!" with exit 1. ``install()`` replaces the handlers with one raising
``Interrupted`` (a ``BaseException`` that Click does not catch); ``atomic_path`` removes its temp on
any ``BaseException`` and the entry point maps it to exit 130.
"""

from __future__ import annotations

import signal


class Interrupted(BaseException):
    """Raised by the SIGINT/SIGTERM handler; the entry point exits 130."""


def _raise(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`Interrupted` (main thread only; idempotent)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, _raise)
        except (ValueError, OSError):  # not the main thread, or not supported here
            pass
