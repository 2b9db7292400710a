"""Parsing of human-written quantities at the edges: durations and byte sizes.

Inside the package every quantity is a plain number in seconds or bytes; names carry the unit.
"""

from __future__ import annotations

import math
import re

from .errors import InputError

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s|m|min|h)?\s*$")
_DURATION_SCALE = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int, *, default_unit: str = "s") -> float:
    """``"200ms"`` → 0.2, ``"0.2s"`` → 0.2, ``"30m"`` → 1800.0; a bare number uses ``default_unit``."""
    if isinstance(text, (int, float)):
        value = float(text) * _DURATION_SCALE[default_unit]
    else:
        match = _DURATION_RE.match(text)
        if not match:
            raise InputError(f"invalid duration {text!r}: expected a number with a unit such as 200ms, 0.2s, 30m")
        value = float(match.group(1)) * _DURATION_SCALE[match.group(2) or default_unit]
    if not math.isfinite(value) or value < 0:
        raise InputError(f"invalid duration {text!r}: must be a finite, non-negative time")
    return value


# vLLM's human-readable integers (vllm/utils/argparse_utils.py): lower-case suffixes are decimal,
# upper-case ones binary; a decimal number with a binary suffix is refused.
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_IEC = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes or counts written like vLLM accepts them (``8G``, ``64M``, ``25.6k``) or as ``8GiB``/``8GB``."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise InputError(f"invalid size {text!r}: expected a number with an optional suffix such as 64M or 8GiB")
    number, suffix = match.group(1), match.group(2)
    if not suffix:
        if "." in number:
            raise InputError(f"invalid size {text!r}: expected a whole number")
        return int(number)
    if suffix in _DECIMAL:
        return int(float(number) * _DECIMAL[suffix])
    if suffix in _BINARY:
        if "." in number:
            raise InputError(
                f"Decimals are not allowed with binary suffixes like {suffix}. "
                f"Did you mean to use {number}{suffix.lower()} instead?"
            )
        return int(number) * _BINARY[suffix]
    if suffix.upper() in _IEC:
        return int(float(number) * _IEC[suffix.upper()])
    raise InputError(f"invalid size {text!r}: unknown suffix {suffix!r}")


def format_gib(num_bytes: float) -> str:
    """vLLM prints memory as ``round(x / 2**30, 2)`` GiB."""
    return f"{round(num_bytes / 2**30, 2)}"
