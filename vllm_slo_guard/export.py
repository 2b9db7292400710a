"""The tuned result as files an operator uses: ``tuned.toml``, vLLM's ``--config`` YAML, an argv line.

TOML (tomli-w; read back with tomllib/tomli) is the full record: model, vLLM version, hardware, SLOs,
workload, objective, searcher, seed and study, then ``[winner]`` and ``[[runner_up]]`` tables with
the engine arguments, the argv, the measured figures (``vllm bench serve``'s keys) and the exact
``vllm serve`` command. The YAML is for ``vllm serve --config FILE``: one ``flag-name: value`` per
line; a false boolean is written ``no-<flag>: true`` because under ``vllm serve`` a ``false`` value is
silently dropped: ``FlexibleArgumentParser.load_config_file`` (``vllm/utils/argparse_utils.py``) turns
``false`` into ``--no-<flag>`` only when the parser reading the file knows that flag, and under
``vllm serve`` the file is read by the root ``vllm`` parser, which does not know the serve flags (seen in
``tests/data/vllm-cpu-logs/yaml_config_false_dropped_vllm_cli.log``). It is written by hand: one tiny
format does not need pyyaml.
Every file is written atomically (``files.write_atomic``), so a crash never leaves half a
``tuned.toml`` behind.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w

from .errors import InputError, SloGuardError
from .search.result import Candidate, TuneResult, build_result
from .search.storage import load_store
from .spec import TuneSpec
from .vllm_rules.args import O_FLAG, SHORT_FLAGS

FORMATS = ("toml", "yaml", "args")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def serve_command(model: str, argv: Sequence[str]) -> str:
    """The exact ``vllm serve`` command line, shell-quoted."""
    return shlex.join(["vllm", "serve", model, *argv])


# --- TOML ---------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> Any:
    """TOML has no null: drop None (recursively); tuples become lists."""
    if isinstance(value, Mapping):
        return {str(k): _toml_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_value(v) for v in value if v is not None]
    return value


def _candidate_table(result: TuneResult, candidate: Candidate) -> dict[str, Any]:
    outcome = candidate.outcome
    metrics: dict[str, Any] = {
        k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    }
    metrics.update(
        {"kv_cache_tokens": outcome.kv_cache_tokens, "startup_s": outcome.startup_s,
         "measurement_s": outcome.measurement_s}
    )  # fmt: skip
    table: dict[str, Any] = {
        "trial": candidate.trial,
        "confirmed": candidate.confirmed,
        "status": outcome.status,
        "command": serve_command(result.spec.model, candidate.argv),
        "argv": list(candidate.argv),
        "engine_args": {**candidate.engine_args, "pinned_args": list(result.spec.pinned_args)},
        "metrics": metrics,
    }
    if outcome.objective is not None and math.isfinite(outcome.objective):
        key = "latency_s" if result.spec.objective == "latency" else "capacity_req_per_s"
        table[key] = outcome.objective
    if outcome.violation is not None and math.isfinite(outcome.violation):
        table["violation"] = outcome.violation
    if outcome.category:
        table["category"] = outcome.category
        table["root_cause"] = outcome.root_cause
    if outcome.repair_notes:
        table["repair_notes"] = list(outcome.repair_notes)
    return table


def result_document(result: TuneResult) -> dict[str, Any]:
    """The TOML document as a dict (top-level facts, then the winner and the runner-ups)."""
    spec = result.spec
    doc: dict[str, Any] = {
        "model": spec.model,
        "vllm_version": result.vllm_version,
        "status": "tuned" if result.winner is not None else "no_feasible_config",
        "objective": spec.objective,
        "searcher": spec.searcher,
        "seed": spec.seed,
        "study": result.study_name,
        "slos": [str(s) for s in spec.slos],
        "hardware": dict(result.hardware),
        "workload": spec.workload.to_dict(),
    }
    if result.winner is not None:
        doc["winner"] = _candidate_table(result, result.winner)
    if result.runner_ups:
        doc["runner_up"] = [_candidate_table(result, c) for c in result.runner_ups]
    if result.best_miss is not None:
        doc["best_miss"] = _candidate_table(result, result.best_miss)
    return _toml_value(doc)


def to_toml(result: TuneResult) -> str:
    return tomli_w.dumps(result_document(result))


# --- vLLM YAML and argv ----------------------------------------------------------------------------


def _scalar(text: str) -> str:
    if _NUMBER.match(text) or (_PLAIN.match(text) and text.lower() not in _YAML_WORDS):
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def argv_to_config(argv: Sequence[str]) -> dict[str, Any]:
    """``vllm serve`` flags as ``--config`` keys: ``True`` for a bare flag, a string or a list of strings."""
    out: dict[str, Any] = {}
    dotted: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        match = O_FLAG.match(arg)
        if match:
            level = match.group(1)
            if not level and i < len(args) and args[i].isdigit():
                level, i = args[i], i + 1
            out["optimization-level"] = level or "2"
            continue
        if arg.startswith(("-cc.", "--compilation-config.")):
            key, eq, value = arg.split(".", 1)[1].partition("=")
            if not eq and i < len(args):
                value, i = args[i], i + 1
            try:
                dotted[key] = json.loads(value)
            except json.JSONDecodeError:
                dotted[key] = value
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
        elif arg in SHORT_FLAGS:
            name, eq, value = SHORT_FLAGS[arg], "", ""
        else:
            raise InputError(f"cannot write {arg!r} to a vLLM YAML config (use the flag's long --name)")
        key = name.replace("_", "-")
        if eq:
            out[key] = value
            continue
        values = []
        while i < len(args) and (not args[i].startswith("-") or _NUMBER.match(args[i])):
            values.append(args[i])
            i += 1
        out[key] = True if not values else values[0] if len(values) == 1 else values
    if dotted:
        base = out.get("compilation-config")
        merged = json.loads(base) if isinstance(base, str) else {}
        merged.update(dotted)
        out["compilation-config"] = json.dumps(merged, separators=(",", ":"))
    return out


def to_yaml(model: str, argv: Sequence[str], *, header: str = "") -> str:
    """vLLM's ``--config`` YAML for ``vllm serve --config FILE`` (false booleans as ``no-<flag>: true``)."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines.append(f"model: {_scalar(model)}")
    for key, value in argv_to_config(argv).items():
        if value is True:
            lines.append(f"{key}: true")
        elif isinstance(value, list):
            lines.append(f"{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{key}: {_scalar(str(value))}")
    return "\n".join(lines) + "\n"


def render(result: TuneResult, fmt: str) -> str:
    """The result in ``fmt``: ``toml`` (everything), ``yaml`` or ``args`` (the winner's flags)."""
    if fmt == "toml":
        return to_toml(result)
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    winner = result.winner
    if winner is None:
        raise SloGuardError(
            f"study {result.study_name!r} has no configuration that met every SLO; nothing to export as {fmt} "
            "(--format toml shows the closest miss)"
        )
    if fmt == "args":
        return shlex.join(winner.argv) + "\n"
    header = f"vllm serve --config FILE  (vllm-tune study {result.study_name}, trial {winner.trial})"
    return to_yaml(result.spec.model, winner.argv, header=header)


def result_from_study(storage: str | None, study_name: str) -> TuneResult:
    """Rebuild the tuning result from a stored study alone (no process, no evaluator)."""
    store = load_store(storage, study_name)
    meta = store.meta
    spec = TuneSpec.from_dict(meta["tune_spec"])
    return build_result(
        spec, store.records(), study_name=store.name, storage=store.url, hardware=meta.get("hardware", {}),
        vllm_version=str(meta.get("vllm_version", "unknown")), fixed=meta.get("fixed", {}),
    )  # fmt: skip


def export_study(storage: str | None, study_name: str, fmt: str = "toml") -> str:
    """A stored study's result in ``fmt`` (``toml`` | ``yaml`` | ``args``)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return render(result_from_study(storage, study_name), fmt)
