"""Pre-flight of the pinned flags: a run stops at once, in one line, when vLLM refuses the user's own flags.

A pinned flag is never tuned, so vLLM refusing it fails every trial the same way; fifteen crashed
trials would bury the one line that matters. Three checks: before the first trial, with the real engine,
the installed vLLM's own parser in its own Python (``engine/vllm_args.py``; with the simulated one, the
table of vLLM's flags is the parser, and the flags it accepts without modelling them are named once);
then vLLM's defaults plus the pinned (and ``--fix``) flags against the guard's rules
(:func:`check_pinned_defaults`); then, on trials that really launched a server, the crash classifier's
verdict: the flags its argparse rules name, carried on the outcome (:class:`PinnedFlagCheck`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.crash import Category, classify
from ..engine.vllm_args import check_serve_flags
from ..errors import InputError
from ..guard import GuardVerdict, predict
from ..outcome import Outcome, TrialStatus
from ..progress import Progress
from ..space import vllm_defaults
from ..spec import TuneSpec
from ..text import first_line
from ..vllm_rules.args import unmodelled_note
from ..vllm_rules.startup import Device
from .evaluators import Evaluator, VirtualSimEvaluator, make_evaluator
from .problem import Problem, build_problem, fixed_argv
from .result import TuneResult
from .tuner import tune


def refused_flags(root_cause: str) -> tuple[str, ...]:
    """The flags an argparse refusal line names, as the crash classifier reads it (exit status 2)."""
    report = classify(root_cause, exit_code=2)
    return report.flags if report is not None else ()


def refused_pinned_flag(refused: str | Sequence[str], pinned: Sequence[str]) -> str | None:
    """The pinned flag among those vLLM refused (unrecognized, invalid value, ambiguous), if any.

    ``refused``: the flags the classifier named, or an argparse line to classify.
    """
    named = refused_flags(refused) if isinstance(refused, str) else refused
    ours = {arg.split("=", 1)[0].replace("_", "-") for arg in pinned if arg.startswith("-")}
    return next((flag for flag in (n.replace("_", "-") for n in named) if flag in ours), None)


@dataclass
class PinnedFlagCheck:
    """An evaluator wrapper: a crash no tuned value can cause becomes an environment abort of the run.

    vLLM refusing a *pinned* flag fails every trial the same way, and fifteen crashed trials would
    bury the one line that matters. Two signs, both only on trials that really launched a server:
    an argparse error naming a pinned flag (any trial), and a ``config_invalid`` crash of vLLM's
    defaults plus the pinned flags (SLO-Guard's trial 0). The tuner aborts on an ``environment``
    outcome with the root cause, which stays vLLM's own line.
    """

    model: str
    inner: Evaluator
    pinned: tuple[str, ...]
    defaults_argv: tuple[str, ...]

    def guard(self, argv: Sequence[str]) -> GuardVerdict:
        return self.inner.guard(argv)

    def evaluate(self, argv: Sequence[str], seed: int, *, confirm: bool = False) -> Outcome:
        outcome = self.inner.evaluate(argv, seed, confirm=confirm)
        if outcome.status != TrialStatus.CRASH or outcome.category != Category.CONFIG_INVALID:
            return outcome
        cause = (outcome.root_cause or "").strip()
        # a launched server's crash carries the classifier's reading; another evaluator's is classified here
        refused = outcome.refused_flags if outcome.crash_rule is not None else cause
        if refused_pinned_flag(refused, self.pinned) or tuple(argv) == self.defaults_argv:
            outcome.category = Category.ENVIRONMENT
            outcome.root_cause = f"vLLM refuses your flags {shlex.join(self.pinned)}: {first_line(cause)}"
        return outcome


def check_pinned_defaults(spec: TuneSpec, problem: Problem, device: Device) -> None:
    """vLLM's defaults plus the pinned (and ``--fix``) flags must pass vLLM's argument checks (the guard's model)."""
    argv = [*spec.pinned_args, *fixed_argv(problem.fixed)]
    if not argv:
        return
    verdict = predict(spec.model, argv, device)
    if not verdict.ok and verdict.category == Category.CONFIG_INVALID:
        raise InputError(f"vLLM refuses your flags {shlex.join(argv)} even with its defaults: {verdict.message}")


def tune_checked(spec: TuneSpec, progress: Progress) -> TuneResult:
    """``search.tuner.tune`` with the pinned-flag checks: first on the guard's model, then on real trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as `tune`: our progress lines, not Optuna's
    spec.validate()
    if spec.engine == "vllm":  # what the installed vLLM refuses stops here, in its own words
        check_serve_flags(spec.model, spec.pinned_args, spec.vllm_cmd, note=progress.note)
    elif (note := unmodelled_note(spec.pinned_args)) is not None:
        progress.note(note)
    device = spec.trial_device()
    problem = build_problem(spec, device)
    check_pinned_defaults(spec, problem, device)
    name = spec.study_name or spec.default_study_name(spec.hardware(device))
    evaluator = make_evaluator(spec, problem, name)
    if not isinstance(evaluator, VirtualSimEvaluator):  # the in-process simulator is the guard's own model
        defaults = tuple(problem.argv(problem.repaired(vllm_defaults(problem.space))))
        evaluator = PinnedFlagCheck(evaluator.model, evaluator, spec.pinned_args, defaults)
    return tune(spec, evaluator=evaluator, progress=progress)
