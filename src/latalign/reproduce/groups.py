"""Experiment groups: the unit ``latalign reproduce`` runs, reports and asks for claims.

The paper's experiments are one group (:mod:`.paper`, several experiments: ``ce`` …
``map``); ``nat`` and ``beyond_tf`` are groups of one experiment each. The built-in groups
are listed in :mod:`.registry`; others plug in with :func:`latalign.reproduce.registry.
register` without editing the runner.

What the runner (:mod:`.run`) does for a group ``g``:

1. ``--experiments`` accepts the names of ``g.names()`` (``g.experiments``, or the group's
   own name); without it, ``g.default_names(preset)`` run (by default all of them in the
   presets of ``g.default_presets`` that also appear in ``g.updates``). Experiments named in ``g.required(preset)`` (``g.requires``, or
   ``g.requires_for[preset]``; e.g. ``"ce"``, a teacher) are added to the run and run first.
2. For each selected experiment ``name`` it calls ``g.run(GroupRun(...))`` with
   ``directory = {out}/{name}/``. Unless ``g.reuses_cells`` (the group then reuses its own
   runs, cell by cell, :mod:`.cells`), the runner reuses a finished ``result.json`` with the
   same ``g.result_spec(...)`` (``--force`` deletes the directory first), records the seconds
   taken when the result has none, and writes ``result.json`` last; ``g.run`` only computes.
3. The results hold what ``g.run`` returned under ``name`` (a :class:`~latalign.reproduce.
   records.Record`, or JSON-able data; ``g.record`` reads a saved one back).
   ``g.claims(results, result)`` adds :class:`~latalign.reproduce.records.Claim` rows and
   ``g.report(results, result, out)`` the blocks of its report section (it may write PNGs
   into ``out`` and refer to them with ``("img", file_name, caption)`` blocks), after a
   heading unless ``g.heading`` is False. Both are asked when the group ran — on every run
   when ``g.always`` (the paper's claims then say what did not run); ``result`` is the
   group's result (None for a group of several experiments).
4. A group whose experiments do not read each other's results may compute some of them
   side by side first (``g.ahead``; the paper's trained experiments do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latalign.reproduce.context import Context
from latalign.reproduce.records import Claim, Results
from latalign.reproduce.render import Block


@dataclass
class GroupRun:
    """What a group's ``run`` receives.

    Attributes:
        ctx: the reproduction's :class:`~latalign.reproduce.context.Context` (``ctx.data``
            is the prepared corpus, ``ctx.preset`` the preset, ``ctx.seed``, ``ctx.threads``,
            ``ctx.cache_dir``, ``ctx.progress``; :func:`latalign.reproduce.context.
            train_config` builds a ``TrainConfig`` with the preset's optimiser and batch size).
        directory: ``{out}/{experiment}/`` (it exists unless the group reuses cells: empty on
            a fresh run, or holding an interrupted run's files, e.g. ``train/`` to resume).
        updates: the group's updates for this preset after ``--scale`` and ``--updates
            name.key=N`` (keys as in ``ExperimentGroup.updates[preset]``).
        results: the results so far (``results.experiments["ce"]`` etc.; everything in
            ``ExperimentGroup.required(preset)`` is there).
        experiment: which of the group's experiments to run.
    """

    ctx: Context
    directory: Path
    updates: dict[str, int]
    results: Results
    experiment: str


@dataclass(frozen=True)
class ExperimentGroup:
    """One experiment group.

    Attributes:
        name: the group's name (``[a-z0-9_]+``); for a group of one experiment, also the
            experiment's name for ``--experiments`` and its directory.
        description: one line for ``--help``, the progress log and the report heading.
        run: ``run(GroupRun) -> result`` — trains/decodes/measures one experiment, returns
            its record. Losses in nats per target token; BLEU 0-100; shares in [0, 1].
        updates: ``{preset name: {key: updates}}``; a preset missing here refuses the group.
        claims: ``claims(results, result) -> list[Claim]`` or None.
        report: ``report(results, result, out: Path) -> list[block]`` or None; blocks as in
            :mod:`latalign.reproduce.render`.
        requires: experiments that must have run first (added to the run automatically).
        default_presets: presets where the group runs when ``--experiments`` is not given.
        requires_for: ``{preset name: experiments}`` replacing ``requires`` in that preset
            (e.g. a teacher that is the preset's baseline recipe rather than ``ce``).
        experiments: ``{experiment name: description}`` of a group of several experiments
            (empty: the group is one experiment, named like the group).
        reuses_cells: the group reuses finished work itself (the runner neither checks nor
            writes ``{out}/{experiment}/result.json``).
        spec: ``spec(ctx, experiment, updates) -> dict | None`` — what a finished result
            depends on, None where there is no one result file (None: ``ctx.spec(experiment)``
            and the updates).
        record: reads a saved result back (None: the saved JSON as it is).
        defaults: ``defaults(preset) -> experiment names`` run without ``--experiments``
            (None: all of :meth:`names` in ``default_presets`` that ``updates`` sizes).
        always: claims and report on every run, not only when the group ran.
        heading: the report section starts with a heading ``description (`name`)``.
        ahead: ``ahead(ctx, names) -> {name: result}`` — experiments of ``names`` (the
            group's selected ones, in run order) that do not read each other's results,
            computed before the group's loop, side by side (:func:`~latalign.reproduce.
            context.run_jobs`); the runner takes their results as they are and runs the
            others one by one (None: every experiment runs in the loop).
    """

    name: str
    description: str
    run: Callable[[GroupRun], Any]
    updates: Mapping[str, Mapping[str, int]]
    claims: Callable[[Results, Any], list[Claim]] | None = None
    report: Callable[[Results, Any, Path], list[Block]] | None = None
    requires: tuple[str, ...] = ()
    default_presets: tuple[str, ...] = field(default=("quick", "multi30k", "paper"))
    requires_for: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    experiments: Mapping[str, str] = field(default_factory=dict)
    reuses_cells: bool = False
    spec: Callable[[Context, str, dict[str, int]], dict[str, Any] | None] | None = None
    record: Callable[[dict[str, Any]], Any] | None = None
    defaults: Callable[[str], tuple[str, ...]] | None = None
    always: bool = False
    heading: bool = True
    ahead: Callable[[Context, list[str]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name):
            raise ValueError(f"expected a group name of [a-z0-9_]; found {self.name!r}")

    def names(self) -> dict[str, str]:
        """``{experiment name: description}`` of what ``--experiments`` may select."""
        return dict(self.experiments) or {self.name: self.description}

    def default_names(self, preset: str) -> list[str]:
        """The experiments of this group that run in ``preset`` without ``--experiments``."""
        if self.defaults is not None:
            return list(self.defaults(preset))
        if preset in self.default_presets and preset in self.updates:
            return list(self.names())
        return []

    def required(self, preset: str) -> tuple[str, ...]:
        """The experiments that must run before this group in ``preset``."""
        return tuple(self.requires_for.get(preset, self.requires))

    def result_spec(
        self, ctx: Context, experiment: str, updates: dict[str, int]
    ) -> dict[str, Any] | None:
        """What ``experiment``'s finished result depends on (compared on reuse)."""
        if self.spec is not None:
            return self.spec(ctx, experiment, updates)
        return ctx.spec(experiment) | {"updates": updates}

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
