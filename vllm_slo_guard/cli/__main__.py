"""``python -m vllm_slo_guard.cli``."""

from . import main

main()
