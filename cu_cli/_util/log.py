"""Logging for library code: a module logger; the CLI attaches a rich stderr handler."""

import logging


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("cu_cli") else f"cu_cli.{name}")
