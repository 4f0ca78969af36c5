"""The paper's trained experiments: the criterion experiments (``ce``,
``label_smoothed_ce``, ``ctc``, ``axe``, ``axe_untied``, ``causal_axe``) and doubled CTC,
each one :class:`~latalign.reproduce.cells.Cell` in ``{out}/{name}/``: train the preset's
updates (teacher forcing; doubled CTC with the regime ``doubled``), decode the test set from
the last checkpoint (beam search; doubled CTC greedily, pair by pair), analyse validation
(:func:`latalign.reproduce.validation.analyse`)."""

from __future__ import annotations

from latalign.reproduce.cells import Cell, CellRun, curves, run_cell
from latalign.reproduce.context import Context, train_config
from latalign.reproduce.presets import CRITERION_OF
from latalign.reproduce.records import ExperimentResult
from latalign.reproduce.validation import analyse

DOUBLED = "doubled_ctc"


def run_criterion_experiment(name: str, ctx: Context) -> ExperimentResult:
    """Train ``name`` (a key of :data:`CRITERION_OF`), decode the test set with beam search,
    analyse validation (best paths causal for ``causal_axe``)."""
    criterion, options = CRITERION_OF[name]
    model = {"tie_output": False} if name == "axe_untied" else {}
    directory = ctx.out / name
    cfg = train_config(ctx, directory / "train", criterion, options, ctx.preset.updates[name],
                       model)  # fmt: skip

    def record(c: CellRun) -> ExperimentResult:
        analysis = analyse(c.run, ctx, causal=name == "causal_axe")
        return ExperimentResult(
            name=name, criterion=criterion, options=options,
            tied_output=bool(c.run.model.cfg.share_decoder_input_output_embed),
            updates=c.updates, final_valid_loss=c.final("valid_loss"),
            final_valid_ce=c.final("valid_ce"), final_train_loss=c.final_train_loss,
            **curves(c.history, ctx), test=c.test, analysis=analysis, seconds=c.seconds(),
        )  # fmt: skip

    cell = Cell(name, directory, ctx.spec(name), cfg, directory / "train", ctx.preset.beam,
                ctx.preset.test_sentences)  # fmt: skip
    return run_cell(ctx, cell, record, ExperimentResult.from_json)


def run_doubled_experiment(ctx: Context) -> ExperimentResult:
    """Doubled CTC (regime ``doubled`` + criterion ``doubled_ctc`` of the one ``train()``;
    see :mod:`latalign.translate.doubled`): greedy decoding, copy statistics only."""
    directory = ctx.out / DOUBLED
    cfg = train_config(ctx, directory / "train", "doubled_ctc", {"regime": "doubled"},
                       ctx.preset.updates[DOUBLED])  # fmt: skip

    def record(c: CellRun) -> ExperimentResult:
        analysis = analyse(c.run, ctx, causal=False, figures=False)
        return ExperimentResult(
            name=DOUBLED, criterion="ctc (m = 2L, inputs doubled)", updates=c.updates,
            final_valid_loss=c.final("valid_loss"), final_train_loss=c.final_train_loss,
            **curves(c.history, ctx), test=c.test, analysis=analysis, seconds=c.seconds(),
        )  # fmt: skip

    cell = Cell(DOUBLED, directory, ctx.spec(DOUBLED), cfg, directory / "train", 1,
                ctx.preset.test_sentences)  # fmt: skip
    return run_cell(ctx, cell, record, ExperimentResult.from_json)
