"""Searchers by name, for the CLI and the comparison study."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..errors import InputError
from .base import SearchContext, Searcher
from .baselines import GridSearcher, RandomSearcher, TpeSearcher
from .slo_guard import SloGuardSearcher

SEARCHERS: Mapping[str, Callable[[SearchContext], Searcher]] = MappingProxyType(
    {
        "slo-guard": SloGuardSearcher,
        "random": RandomSearcher,
        "grid": GridSearcher,
        "tpe": TpeSearcher,
    }
)


def make_searcher(name: str, context: SearchContext) -> Searcher:
    """The searcher called ``name`` for this problem."""
    try:
        factory = SEARCHERS[name]
    except KeyError:
        raise InputError(f"unknown searcher {name!r}; choose one of: {', '.join(SEARCHERS)}") from None
    return factory(context)
