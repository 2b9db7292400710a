"""Small text helpers for the one line an operator reads when something fails."""

from __future__ import annotations


def first_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of ``text``, at most ``limit`` characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "no output")[:limit]
