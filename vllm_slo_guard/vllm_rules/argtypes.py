"""The argparse ``type`` callables of vLLM's serve parser, with vLLM's names, results and error texts.

Argparse words a refusal from the callable itself: ``ArgumentTypeError`` is printed as raised,
``ValueError`` as ``invalid <__name__> value: '<text>'``. So each callable here carries the name vLLM's
has, and raises what vLLM's raises: ``human_readable_int`` and ``human_readable_int_or_auto`` from
``vllm/utils/argparse_utils.py``; ``parse_type``, ``optional_type``, ``union_dict_and_str`` and the config
objects' ``parse_dataclass`` from ``vllm/engine/arg_utils.py``. :func:`converter` turns the type names of
``serve_flags.py`` into these callables.

One part is not modelled: a config object's JSON (``--speculative-config '{...}'``) is validated by
pydantic in vLLM; here its text is kept as given.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

Convert = Callable[[str], Any]

_SUFFIXED = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def human_readable_int(value: str) -> int:
    """``1k`` = 1000, ``1K`` = 1024, ``25.6k`` = 25600; a plain ``int()`` otherwise (so ``1GiB`` is refused)."""
    value = value.strip()
    match = _SUFFIXED.fullmatch(value)
    if match:
        number, suffix = match.groups()
        if suffix in _DECIMAL:
            return int(float(number) * _DECIMAL[suffix])
        try:
            return int(number) * _BINARY[suffix]
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"Decimals are not allowed with binary suffixes like {suffix}. Did you mean to use "
                f"{number}{suffix.lower()} instead?"
            ) from e
    return int(value)


def human_readable_int_or_auto(value: str) -> int:
    """:func:`human_readable_int`, and ``-1`` or ``auto`` for vLLM's auto-fit (-1)."""
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_readable_int(value)


def parse_type(return_type: Convert) -> Convert:
    def _parse_type(val: str) -> Any:
        try:
            return return_type(val)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"Value {val} cannot be converted to {return_type}.") from e

    return _parse_type


def optional_type(return_type: Convert) -> Convert:
    def _optional_type(val: str) -> Any:
        if val == "" or val == "None":
            return None
        return parse_type(return_type)(val)

    return _optional_type


def union_dict_and_str(val: str) -> Any:
    if not re.match(r"(?s)^\s*{.*}\s*$", val):
        return str(val)
    return optional_type(json.loads)(val)


def parse_dataclass(val: str) -> str:
    """A config object's JSON, kept as text (vLLM validates it with pydantic; not modelled)."""
    return val


def lower_snake(val: str) -> str:
    """The kernel-backend flags' spelling rule: ``Flash-Infer`` is ``flash_infer``."""
    return val.lower().replace("-", "_")


_NAMED: dict[str, Convert] = {
    "int": int,
    "float": float,
    "str": str,
    "json": json.loads,
    "human_readable_int": human_readable_int,
    "human_readable_int_or_auto": human_readable_int_or_auto,
    "dict_or_str": union_dict_and_str,
    "lower_snake": lower_snake,
}


def converter(name: str | None) -> Convert | None:
    """The callable of a type name in ``serve_flags.py`` (``optional(human_readable_int)``, ``config:…``, …)."""
    if name is None:
        return None
    for wrapper, wrap in (("optional(", optional_type), ("parse_type(", parse_type)):
        if name.startswith(wrapper) and name.endswith(")"):
            inner = converter(name[len(wrapper) : -1])
            return wrap(inner if inner is not None else str)
    if name.startswith("config:"):
        return parse_dataclass
    return _NAMED.get(name, str)  # "custom": vLLM's own lambda; the text is kept
