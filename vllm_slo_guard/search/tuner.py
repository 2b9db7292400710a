"""``tune``: one tuning run of a spec, from its problem and study to the chosen result.

The parts are elsewhere, one job each: the problem (``problem.py``), the evaluator
(``evaluators.py``), the searcher (``registry.py``), the loop (``loop.py``), the stored study
(``storage.py``) and the winner's choice (``result.py``). Re-running the same spec resumes its study.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.server_record import stop_stale
from ..progress import NullProgress, Progress
from ..spec import TuneSpec, identity_hash
from .base import SearchContext, Searcher
from .evaluators import Evaluator, ServerEvaluator, VirtualSimEvaluator, make_evaluator
from .loop import TuningLoop
from .problem import build_problem
from .registry import make_searcher
from .result import TuneResult, build_result
from .storage import default_storage_url, open_study


def _server_logs(evaluator: object) -> Path | None:
    """The log folder of a real-server evaluator, also when wrapped (``preflight.PinnedFlagCheck``)."""
    while not isinstance(evaluator, ServerEvaluator):
        evaluator = getattr(evaluator, "inner", None)
        if evaluator is None:
            return None
    return evaluator.log_dir


def tune(
    spec: TuneSpec,
    *,
    evaluator: Evaluator | None = None,
    progress: Progress | None = None,
    searcher: Searcher | None = None,
) -> TuneResult:
    """Tune ``spec`` (resuming its study when one exists) and return the result.

    ``evaluator`` and ``searcher`` replace the ones ``spec`` names (tests, custom harnesses);
    ``progress`` receives every record as it is stored.

    Example::

        spec = TuneSpec("Qwen/Qwen2-1.5B", (parse_slo("200ms"),), WorkloadSpec(request_rate=8),
                        engine="sim", gpu="A100-40GB", budget=15)
        result = tune(spec)
        print(result.winner.argv if result.winner else result.best_miss)
    """
    spec.validate()
    device = spec.trial_device()
    hardware = spec.hardware(device)
    problem = build_problem(spec, device)
    identity = spec.identity(hardware)
    fingerprint = identity_hash(identity)
    name = spec.study_name or spec.default_study_name(fingerprint=fingerprint)
    url = spec.storage or default_storage_url()
    vllm_version = identity["vllm_version"]
    meta = {
        "tune_spec": {**spec.to_dict(), "storage": None},  # a database URL may hold a password
        "identity": identity,
        "fingerprint": fingerprint,
        "hardware": hardware,
        "vllm_version": vllm_version,
        "fixed": problem.fixed,
    }
    if evaluator is None:  # before the study: a missing vLLM must not leave an empty study behind
        evaluator = make_evaluator(spec, problem, name)
    store, _ = open_study(
        url=url, name=name, direction="minimize" if spec.minimize else "maximize", space=problem.space, meta=meta
    )
    if searcher is None:
        context = SearchContext(
            problem.space, spec.seed, spec.budget, minimize=spec.minimize, canonical=problem.repaired,
            startup_risk=problem.startup_risk, slos=spec.slos,
        )  # fmt: skip
        searcher = make_searcher(spec.searcher, context)
    progress = progress or NullProgress()
    virtual = isinstance(evaluator, VirtualSimEvaluator)
    loop = TuningLoop(spec, problem, store, evaluator, searcher, progress, virtual=virtual)
    try:
        resumed = loop.replay()
        progress.start(loop.status, study_name=name, storage=url, resumed=resumed)
        for line in stop_stale(_server_logs(evaluator)):  # a server an earlier run of this study could not stop
            progress.note(line)
        loop.run_search()
        loop.run_confirmation()
        result = build_result(
            spec, loop.records, study_name=name, storage=url, hardware=hardware, vllm_version=vllm_version,
            fixed=problem.fixed, notes=loop.notes,
        )  # fmt: skip
        progress.finish(result)
    finally:
        progress.close()
    return result
