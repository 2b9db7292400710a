"""Python tracebacks as text, with the absolute paths a local vLLM install would show.

Real tracebacks carry absolute file names; resolving the frames against this interpreter's
site-packages and stdlib makes the simulated ones indistinguishable from a local install's.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    """One traceback frame; ``root`` is "site" (site-packages), "py" (stdlib), "bin" or "" (as written)."""

    root: str
    path: str
    line: int
    func: str
    code: str = ""
    caret: bool = False


@dataclass(frozen=True)
class TracebackPaths:
    """Where the frames' files would live in this interpreter (real tracebacks carry absolute paths)."""

    site: str
    stdlib: str
    bin: str

    @classmethod
    def here(cls) -> TracebackPaths:
        """Paths of the running interpreter, so the frames look like a local vLLM install."""
        paths = sysconfig.get_paths()
        return cls(paths["purelib"], paths["stdlib"], f"{sys.prefix}/bin")

    def resolve(self, frame: Frame) -> str:
        """The absolute file name of ``frame``."""
        root = {"site": self.site, "py": self.stdlib, "bin": self.bin}.get(frame.root)
        return f"{root}/{frame.path}" if root else frame.path


def _caret_line(code: str) -> str | None:
    """Python 3.11's ``^^^`` marker under the call on the right-hand side (none when it spans the line)."""
    for marker in (" = ", "return "):
        at = code.find(marker)
        if at >= 0:
            start = at + len(marker)
            return " " * (4 + start) + "^" * (len(code) - start)
    return None


def format_traceback(frames: Sequence[Frame], final: str, paths: TracebackPaths) -> str:
    """A ``Traceback (most recent call last):`` block ending in ``final`` (``ExcType: message``)."""
    lines = ["Traceback (most recent call last):"]
    for frame in frames:
        lines.append(f'  File "{paths.resolve(frame)}", line {frame.line}, in {frame.func}')
        if frame.code:
            lines.append(f"    {frame.code}")
            caret = _caret_line(frame.code) if frame.caret else None
            if caret:
                lines.append(caret)
    lines.append(final)
    return "\n".join(lines)
