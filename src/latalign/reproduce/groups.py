"""Experiment groups: experiments that live in their own module and plug into
``latalign reproduce`` (run, claims, report section) without editing the runner.

A group module (``latalign/reproduce/<module>.py``, listed in :data:`GROUP_MODULES`) defines
``GROUP = ExperimentGroup(...)``. :func:`load_groups` imports the listed modules that exist;
an error inside one of them propagates (a broken group is never skipped silently).

What the runner does for a group ``g`` (``run.py``):

1. ``--experiments`` accepts ``g.name``; it runs by default in the presets of
   ``g.default_presets`` that also appear in ``g.updates``. Experiments named in
   ``g.required(preset)`` (``g.requires``, or ``g.requires_for[preset]``; e.g. ``"ce"``, a
   teacher) are added to the run and run first.
2. The directory ``{out}/{g.name}/`` holds the group's files. A finished group (its
   ``result.json``, same preset, seed, data and updates) is reused; ``--force`` deletes the
   directory first. The runner writes ``result.json`` (atomically, last) and records the
   seconds taken; ``g.run`` only computes.
3. ``results["groups"][g.name]`` is what ``g.run`` returned (JSON-able: numbers, strings,
   lists, dicts). ``g.claims(results, result)`` adds rows to the claims table (build them
   with :func:`latalign.reproduce.report.claim_row`); ``g.report(results, result, out)``
   returns the blocks of its report section (it may write PNGs into ``out`` and refer to
   them with ``("img", file_name, caption)`` blocks).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: modules of ``latalign.reproduce`` that may define ``GROUP`` (imported when present)
GROUP_MODULES: tuple[str, ...] = ("nat", "beyond_tf")


@dataclass
class GroupRun:
    """What a group's ``run`` receives.

    Attributes:
        ctx: the reproduction's :class:`latalign.reproduce.experiments.Context` (``ctx.data``
            is the prepared corpus, ``ctx.preset`` the preset, ``ctx.seed``, ``ctx.threads``,
            ``ctx.cache_dir``, ``ctx.progress``; ``experiments.train_config(...)`` builds a
            ``TrainConfig`` with the preset's optimiser and batch sizes).
        directory: ``{out}/{group name}/`` (exists; empty on a fresh run, or holding an
            interrupted run's files, e.g. ``train/`` to resume from).
        updates: the group's updates for this preset after ``--scale`` and ``--updates
            name.key=N`` (keys as in ``ExperimentGroup.updates[preset]``).
        results: the results so far (``results["experiments"]["ce"]`` etc.; everything in
            ``ExperimentGroup.required(preset)`` is there).
    """

    ctx: Any
    directory: Path
    updates: dict[str, int]
    results: dict[str, Any]


@dataclass(frozen=True)
class ExperimentGroup:
    """One pluggable experiment group.

    Attributes:
        name: the name used by ``--experiments`` and as the directory (``[a-z0-9_]+``).
        description: one line for ``--help``, the progress log and the report heading.
        run: ``run(GroupRun) -> dict`` — trains/decodes/measures, returns the result
            (JSON-able). Losses in nats per target token; BLEU 0-100; shares in [0, 1].
        updates: ``{preset name: {key: updates}}``; a preset missing here refuses the group.
        claims: ``claims(results, result) -> list[claim row]`` or None.
        report: ``report(results, result, out: Path) -> list[block]`` or None; blocks as in
            :func:`latalign.reproduce.report.build_blocks`.
        requires: experiments that must have run first (added to the run automatically).
        requires_for: ``{preset name: experiments}`` replacing ``requires`` in that preset
            (e.g. a teacher that is the preset's baseline recipe rather than ``ce``).
        default_presets: presets where the group runs when ``--experiments`` is not given.
    """

    name: str
    description: str
    run: Callable[[GroupRun], dict[str, Any]]
    updates: Mapping[str, Mapping[str, int]]
    claims: Callable[[dict[str, Any], dict[str, Any]], list[dict[str, Any]]] | None = None
    report: Callable[[dict[str, Any], dict[str, Any], Path], list[tuple]] | None = None
    requires: tuple[str, ...] = ()
    default_presets: tuple[str, ...] = field(default=("quick", "multi30k", "paper"))
    requires_for: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name):
            raise ValueError(f"expected a group name of [a-z0-9_]; found {self.name!r}")

    def required(self, preset: str) -> tuple[str, ...]:
        """The experiments that must run before this group in ``preset``."""
        return tuple(self.requires_for.get(preset, self.requires))

    def scaled_updates(
        self, preset: str, scale: float = 1.0, overrides: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """The group's updates for ``preset`` times ``scale`` (at least 1), then
        ``overrides`` (``{key: N}``); ``ValueError`` for a preset or key it does not have."""
        if preset not in self.updates:
            raise ValueError(
                f"expected a preset among {sorted(self.updates)} for experiment group "
                f"{self.name!r}; found {preset!r}"
            )
        base = {k: max(1, round(v * scale)) for k, v in self.updates[preset].items()}
        for k, v in (overrides or {}).items():
            if k not in base:
                raise ValueError(
                    f"expected updates keys of {self.name!r} among {sorted(base)}; found {k!r}"
                )
            base[k] = v
        return base


_REGISTRY: dict[str, ExperimentGroup] = {}


def register(group: ExperimentGroup) -> ExperimentGroup:
    """Add ``group`` (tests register temporary groups this way); returns it."""
    from latalign.reproduce.presets import EXPERIMENTS

    if group.name in EXPERIMENTS:
        raise ValueError(f"expected a new experiment name; found the built-in {group.name!r}")
    _REGISTRY[group.name] = group
    return group


def unregister(name: str) -> None:
    """Remove a registered group (no-op when absent)."""
    _REGISTRY.pop(name, None)


_LOADED = False


def load_groups() -> dict[str, ExperimentGroup]:
    """The registered groups, importing :data:`GROUP_MODULES` once (those that exist)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for mod in GROUP_MODULES:
            full = f"latalign.reproduce.{mod}"
            if importlib.util.find_spec(full) is None:
                continue
            group = getattr(importlib.import_module(full), "GROUP", None)
            if not isinstance(group, ExperimentGroup):
                raise TypeError(f"expected {full}.GROUP to be an ExperimentGroup; found {group!r}")
            _REGISTRY.setdefault(group.name, group)
    return dict(_REGISTRY)
