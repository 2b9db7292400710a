"""Searchers by name: the one list the CLI, the spec and the comparison study choose from.

Names map to where each searcher lives and are imported only when one is made, so that listing the
names (``--searcher``'s choices) does not import Optuna.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from ..errors import InputError
from .base import SearchContext, Searcher

DEFAULT_SEARCHER = "slo-guard"
SEARCHERS: Mapping[str, str] = MappingProxyType(
    {
        "slo-guard": "slo_guard:SloGuardSearcher",
        "random": "baselines:RandomSearcher",
        "grid": "baselines:GridSearcher",
        "tpe": "baselines:TpeSearcher",
    }
)
SEARCHER_NAMES = tuple(SEARCHERS)


def make_searcher(name: str, context: SearchContext) -> Searcher:
    """The searcher called ``name`` for this problem."""
    try:
        where = SEARCHERS[name]
    except KeyError:
        raise InputError(f"unknown searcher {name!r}; choose one of: {', '.join(SEARCHERS)}") from None
    module, _, cls = where.partition(":")
    factory = getattr(importlib.import_module(f".{module}", __package__), cls)
    searcher: Searcher = factory(context)
    return searcher
