"""vLLM's log-line format: ``(APIServer pid=N) INFO MM-DD hh:mm:ss [file.py:line] message``.

Crash classifiers grep trial logs by this prefix, so every simulated line carries it exactly as vLLM's
NewLineFormatter writes it: on stdout, repeated on every line of a multi-line message.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TextIO

DATE_FORMAT = "%m-%d %H:%M:%S"
_LOGGER_NAME = "vllm_slo_guard.sim.vllm"


class VllmFormatter(logging.Formatter):
    """vLLM's log format, prefix repeated on each line so grep-based tools see every line's origin."""

    def __init__(self) -> None:
        super().__init__(datefmt=DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        proc = getattr(record, "vllm_proc", "APIServer")
        where = getattr(record, "vllm_where", f"{record.filename}:{record.lineno}")
        prefix = f"({proc} pid={record.process}) {record.levelname} {self.formatTime(record, self.datefmt)} [{where}] "
        return "\n".join(prefix + line for line in message.split("\n"))


@dataclass(frozen=True)
class VllmLog:
    """Writes vLLM-style lines: ``proc`` is the process name, ``where`` the ``file.py:line`` vLLM logs from."""

    logger: logging.Logger

    def info(self, proc: str, where: str, message: str) -> None:
        self.logger.info(message, extra={"vllm_proc": proc, "vllm_where": where})

    def warning(self, proc: str, where: str, message: str) -> None:
        self.logger.warning(message, extra={"vllm_proc": proc, "vllm_where": where})

    def error(self, proc: str, where: str, message: str) -> None:
        self.logger.error(message, extra={"vllm_proc": proc, "vllm_where": where})


def make_vllm_log(stream: TextIO | None = None) -> VllmLog:
    """A logger writing vLLM lines to ``stream`` (stdout by default, as vLLM does); flushes every line."""
    logger = logging.getLogger(_LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(VllmFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return VllmLog(logger)
