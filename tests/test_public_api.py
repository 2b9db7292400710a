"""The package's public surface: exactly what ``__all__`` promises, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import vllm_slo_guard


def test_all_names_resolve() -> None:
    for name in vllm_slo_guard.__all__:
        assert getattr(vllm_slo_guard, name) is not None


def test_public_names() -> None:
    assert set(vllm_slo_guard.__all__) == {
        "SloGuardError", "__version__", "tune", "TuneResult", "TuneSpec", "Slo", "parse_slo", "Outcome",
        "WorkloadSpec", "simulate", "classify",
    }  # fmt: skip


def test_import_does_not_load_optuna() -> None:
    code = "import sys, vllm_slo_guard; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
