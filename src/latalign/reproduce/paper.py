"""The paper's experiments as one experiment group: ``ce``, ``label_smoothed_ce``,
``baseline``, ``ctc``, ``axe``, ``axe_untied``, ``causal_axe``, ``doubled_ctc`` and ``map``
(:data:`latalign.reproduce.presets.EXPERIMENTS`), sized by the preset's ``updates``, their
claims (:mod:`.claims`) and report section (:mod:`.report`).

Each experiment is one cell (the map: one cell per objective) that reuses its own finished
result in ``{out}/{name}/result.json`` (spec: experiment, preset settings, seed, data; the
baseline also the ``--baseline`` run), so results written by earlier versions stay
reusable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from latalign.reproduce.baseline import baseline_spec, run_baseline_experiment
from latalign.reproduce.claims import paper_claims
from latalign.reproduce.context import Context, job_workers, run_jobs
from latalign.reproduce.experiments import run_criterion_experiment, run_doubled_experiment
from latalign.reproduce.groups import ExperimentGroup, GroupRun
from latalign.reproduce.presets import CRITERION_OF, EXPERIMENTS, PRESETS
from latalign.reproduce.records import Claim, Results
from latalign.reproduce.render import Block
from latalign.reproduce.report import paper_blocks
from latalign.reproduce.theorem_map import run_map

logger = logging.getLogger("latalign.reproduce")

#: how each experiment runs
RUNS: dict[str, Callable[[Context], Any]] = {
    **{name: partial(run_criterion_experiment, name) for name in CRITERION_OF},
    "baseline": run_baseline_experiment,
    "doubled_ctc": run_doubled_experiment,
    "map": run_map,
}


#: experiments that read no other experiment's result: trained side by side (:func:`ahead`)
INDEPENDENT = (*CRITERION_OF, "doubled_ctc")


def run(g: GroupRun) -> Any:
    return RUNS[g.experiment](g.ctx)


def run_one(ctx: Context, experiment: str) -> Any:
    """One experiment in a worker process (a module-level function for the pool)."""
    return RUNS[experiment](ctx)


def ahead(ctx: Context, names: list[str]) -> dict[str, Any]:
    """The selected :data:`INDEPENDENT` experiments in ``ctx.map_workers`` processes (each
    reuses or writes its own cell; results do not depend on the number of processes); none
    when one process would run them anyway (the loop then runs them one by one)."""
    jobs = {n: (n,) for n in names if n in INDEPENDENT}
    if job_workers(ctx, len(jobs)) < 2:
        return {}
    return run_jobs(ctx, run_one, jobs, on_done=lambda n, _: logger.info("%s: done", n))


def spec(ctx: Context, experiment: str, updates: dict[str, int]) -> dict[str, Any] | None:
    """The reuse spec of a paper experiment (the preset holds its updates); None for the
    map, whose objectives are reused one by one."""
    if experiment == "map":
        return None
    return baseline_spec(ctx) if experiment == "baseline" else ctx.spec(experiment)


def defaults(preset: str) -> tuple[str, ...]:
    """The preset's ``default_experiments`` (all when it names none)."""
    return PRESETS[preset].default_experiments or tuple(EXPERIMENTS)


def claims(results: Results, _: Any) -> list[Claim]:
    return paper_claims(results)


def report(results: Results, _: Any, out: Path) -> list[Block]:
    return paper_blocks(results, out)


GROUP = ExperimentGroup(
    name="paper", description="the paper's experiments", experiments=EXPERIMENTS,
    updates={p: {} for p in PRESETS}, always=True, heading=False, reuses_cells=True,
    run=run, ahead=ahead, claims=claims, report=report, spec=spec, defaults=defaults,
)  # fmt: skip
