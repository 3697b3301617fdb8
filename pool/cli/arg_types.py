"""Argument types of the command line: the text of one flag -> its value, or a usage error.

    "512M" ─▶ parse_size     ─▶ 536870912
    "64K"  ─▶ size_or_off    ─▶ 65536 | "off"
    "auto" ─▶ native_threads ─▶ "auto" | a number of threads | 0 ("off")
    "info" ─▶ log_level      ─▶ "INFO"

Each raises argparse.ArgumentTypeError, which argparse turns into EXIT_USAGE.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["log_level", "native_threads", "parse_size", "size_or_off"]

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``1048576`` -> bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give bytes, or a number with K, M, G or T "
            "(for example 512M or 2G)"
        )
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


def size_or_off(text: str) -> int | str:
    """A size as :func:`parse_size` reads it, or ``off``."""
    return "off" if text.strip().lower() == "off" else parse_size(text)


def native_threads(text: str) -> int | str:
    """``--native-threads``: a number of threads, ``auto``, or ``off`` (0)."""
    if text in ("auto", "off"):
        return "auto" if text == "auto" else 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of threads, 'auto' or 'off', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or 'off'), got {value}")
    return value


def log_level(text: str) -> str:
    """``--log-level``: debug, info, warning or error -> the logging level name."""
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level: use debug, info, warning or error"
        )
    return level
