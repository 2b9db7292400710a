"""Write ``serve_flags.py``: the table of ``vllm serve`` flags, read from the installed vLLM's own parser.

A script for vLLM's Python, not a module of the package (it imports vLLM and nothing of ours)::

    .venv-vllm/bin/python vllm_slo_guard/vllm_rules/serve_flags_gen.py > vllm_slo_guard/vllm_rules/serve_flags.py

It builds the parser exactly as ``vllm serve`` does (the root ``FlexibleArgumentParser`` of
``vllm/entrypoints/cli/main.py`` with the serve subcommand of ``vllm/entrypoints/cli/serve.py``, whose
flags ``make_arg_parser`` in ``vllm/entrypoints/launchers/cli_args.py`` adds) and writes one record per
argparse action. Types are named by what they do, so our parser can do the same: ``int``, ``float``,
``str``, ``json`` (``json.loads``), ``human_readable_int`` and ``human_readable_int_or_auto``
(``vllm/utils/argparse_utils.py``), the wrappers ``optional(T)`` and ``parse_type(T)``
(``vllm/engine/arg_utils.py``), ``config:Class`` (a JSON config object that pydantic validates),
``dict_or_str``, ``lower_snake``, or ``custom``.
``--json`` prints the records as JSON instead (the round-trip test compares them with the checked-in table).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import sys
from typing import Any

FIELDS = ("options", "dest", "action", "type", "nargs", "choices", "default", "const")
ACTIONS = {
    "_StoreAction": "store",
    "_StoreTrueAction": "store_true",
    "_StoreFalseAction": "store_false",
    "_StoreConstAction": "store_const",
    "_AppendAction": "append",
    "_CountAction": "count",
    "_HelpAction": "help",
    "_VersionAction": "version",
    "BooleanOptionalAction": "boolean_optional",
}


def serve_parser() -> argparse.ArgumentParser:
    """The ``vllm serve`` subparser, built as ``vllm``'s root parser builds it."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    root = FlexibleArgumentParser(prog="vllm")
    subparsers = root.add_subparsers(required=False, dest="subparser")
    parser: argparse.ArgumentParser = ServeSubcommand().subparser_init(subparsers)
    return parser


def type_name(func: Any) -> str | None:
    """What an argparse ``type`` callable does, in the table's words."""
    from vllm.utils.argparse_utils import human_readable_int, human_readable_int_or_auto

    if func is None:
        return None
    named = {int: "int", float: "float", str: "str", json.loads: "json"}
    named.update({human_readable_int: "human_readable_int", human_readable_int_or_auto: "human_readable_int_or_auto"})
    if func in named:
        return named[func]
    qualname = getattr(func, "__qualname__", "")
    cells = [cell.cell_contents for cell in getattr(func, "__closure__", None) or ()]
    if qualname.startswith("optional_type.") and cells:
        return f"optional({type_name(cells[0])})"
    if qualname.startswith("parse_type.") and cells:
        return f"parse_type({type_name(cells[0])})"
    if qualname.endswith("parse_dataclass"):
        return f"config:{func.__defaults__[0].__name__}"
    if qualname == "union_dict_and_str":
        return "dict_or_str"
    try:
        if func("Ab-Cd") == "ab_cd":
            return "lower_snake"
    except Exception:
        pass
    return "custom"


def plain(value: Any) -> Any:
    """A value as a Python literal: enums by value, sequences as tuples, config objects as ``<Class>``."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(plain(v) for v in value))
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: plain(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


def records(parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    out = []
    for action in parser._actions:
        kind = ACTIONS.get(type(action).__name__, type(action).__name__)
        out.append(
            {
                "options": tuple(action.option_strings),
                "dest": action.dest,
                "action": kind,
                "type": type_name(action.type),
                "nargs": action.nargs,
                "choices": None if action.choices is None else tuple(plain(c) for c in action.choices),
                "default": plain(action.default),
                "const": plain(action.const),
            }
        )
    return out


# --- the table as Python source ---------------------------------------------------------------------------------


def literal(value: Any) -> str:
    if isinstance(value, str):
        if '"' in value and "'" not in value:
            return repr(value)
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + (",)" if len(value) == 1 else ")")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def record_source(record: dict[str, Any]) -> str:
    """One record on one line, so that a vLLM upgrade shows as one changed line per changed flag."""
    return "    ServeFlag(" + ", ".join(literal(record[name]) for name in FIELDS) + "),"


HEADER = '''# ruff: noqa: E501
"""vLLM {version}'s ``vllm serve`` flags, as its own parser defines them: one record per argparse action.

Generated by ``vllm_slo_guard/vllm_rules/serve_flags_gen.py`` from vLLM {version} (Python {python}); do not
edit. Regenerate it against the vLLM you target (``tests/test_serve_flags.py`` fails when they differ)::

    .venv-vllm/bin/python vllm_slo_guard/vllm_rules/serve_flags_gen.py > vllm_slo_guard/vllm_rules/serve_flags.py

``type`` names what the argparse type does (see the generator); a ``default`` written ``<Class>`` is an
instance of that vLLM config class.
"""

from __future__ import annotations

from typing import Any, NamedTuple

VLLM_VERSION = "{version}"
GENERATED_BY = "vllm_slo_guard/vllm_rules/serve_flags_gen.py"


class ServeFlag(NamedTuple):
    """One argparse action of ``vllm serve``: how it is spelled, where it goes, what it takes."""

    options: tuple[str, ...]  # option strings, long and short (empty: the positional model_tag)
    dest: str
    action: str  # store, store_true, boolean_optional (--x / --no-x), append, help, or vLLM's own Action class
    type: str | None
    nargs: str | int | None
    choices: tuple[Any, ...] | None
    default: Any
    const: Any


# fmt: off
FLAGS: tuple[ServeFlag, ...] = (
'''


def module_source(version: str, rows: list[dict[str, Any]]) -> str:
    python = ".".join(str(part) for part in sys.version_info[:2])
    lines = [HEADER.format(version=version, python=python).rstrip("\n")]
    lines += [record_source(record) for record in rows]
    lines += [")", "# fmt: on"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout; only the table goes there
        import vllm

        rows = records(serve_parser())
    if "--json" in argv:
        print(json.dumps({"vllm_version": vllm.__version__, "flags": rows}))
    else:
        sys.stdout.write(module_source(vllm.__version__, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
