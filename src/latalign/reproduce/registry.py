"""The experiment groups ``latalign reproduce`` knows: the built-in ones, imported here by
name (the paper's experiments, ``nat_map``, ``nat``, ``beyond_tf``), and those registered at run time
(:func:`register`, e.g. by tests)."""

from __future__ import annotations

import latalign.reproduce.beyond_tf as beyond_tf
import latalign.reproduce.nat as nat
import latalign.reproduce.nat_map as nat_map
import latalign.reproduce.paper as paper
from latalign.reproduce.groups import ExperimentGroup

#: the built-in groups, in run order
BUILTIN: tuple[ExperimentGroup, ...] = (paper.GROUP, nat_map.GROUP, nat.GROUP, beyond_tf.GROUP)

_REGISTERED: dict[str, ExperimentGroup] = {}


def groups() -> dict[str, ExperimentGroup]:
    """Every group by name, the built-in ones first, in run order."""
    return {g.name: g for g in BUILTIN} | _REGISTERED


def owners() -> dict[str, ExperimentGroup]:
    """``{experiment name: its group}`` in run order: what ``--experiments`` accepts."""
    return {name: g for g in groups().values() for name in g.names()}


def register(group: ExperimentGroup) -> ExperimentGroup:
    """Add ``group`` (after the built-in ones); returns it. ``ValueError`` when it or one of
    its experiments has a name that is taken."""
    taken = set(groups()) | set(owners())
    clash = sorted(({group.name} | set(group.names())) & taken)
    if clash:
        raise ValueError(f"expected new experiment names; found the existing {clash}")
    _REGISTERED[group.name] = group
    return group


def unregister(name: str) -> None:
    """Remove a registered group (no-op when absent; built-in groups stay)."""
    _REGISTERED.pop(name, None)
