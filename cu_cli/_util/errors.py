"""Error tree with documented exit codes (conventions.md §3).

0 success; 1 runtime failure; 2 usage error; 3 incompatible input (base fingerprint/architecture
mismatch, wrong ``cu.kind``, unsupported format version, corrupt file); 4 a requested gate failed;
130 interrupted.
"""


class CuError(Exception):
    """A failure reported to the user as one line; ``exit_code`` 1 unless a subclass says otherwise."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(CuError):
    """Bad combination of arguments that the parser could not catch."""

    exit_code = 2


class IncompatibleError(CuError):
    """Input that cannot be used with this base/format: wrong base, newer format, corrupt header."""

    exit_code = 3


class GateError(CuError):
    """A quality gate requested with ``--fail-under`` failed."""

    exit_code = 4


EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 runtime failure; 2 usage error; 3 incompatible input "
    "(wrong base, newer format, corrupt file, wrong kind); 4 a --fail-under gate failed; "
    "130 interrupted."
)
