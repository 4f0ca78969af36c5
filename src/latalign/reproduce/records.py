"""Typed records of a reproduction: what an experiment measured, what a claim says.

Every record is a dataclass that reads and writes the JSON of ``result.json`` /
``results.json`` (:class:`Record`): a field's JSON key is its name unless its metadata says
``key`` (``"first_train_below_0.1"``); a field whose default is None and whose value is None
is left out unless its metadata says ``null``; a key missing from older files takes the field's default, so results written
by earlier versions stay reusable. Nested records, lists and dicts of records are typed by
their annotations.

Units: losses in nats per target token (eos included), BLEU and chrF 0-100, shares and
probabilities in [0, 1], seconds of wall time.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Self

#: a claim's kinds: ``behaviour`` can come out ✗ (a measurement of trained models);
#: ``construction`` is true by construction (an identity of the objective that the run
#: verifies: a ✗ is a bug); ``finding`` has no pass/fail criterion
KINDS = ("behaviour", "construction", "finding")
MARK = {True: "✓", False: "✗", None: "—"}


class Record:
    """Base of the dataclass records: :meth:`to_json` and :meth:`from_json`."""

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-able data (nested records too)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.default is None and not f.metadata.get("null"):
                continue
            out[f.metadata.get("key", f.name)] = to_json(value)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record of ``data`` (as written by :meth:`to_json`; unknown keys are ignored,
        missing ones take the field's default)."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object for {cls.__name__}; found {type(data)}")
        hints = _hints(cls)
        kwargs = {
            f.name: _from_json(hints[f.name], data[f.metadata.get("key", f.name)])
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.metadata.get("key", f.name) in data
        }
        return cls(**kwargs)


def to_json(value: Any) -> Any:
    """``value`` with every :class:`Record` inside replaced by its JSON (tuples as lists)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(hint: Any, value: Any) -> Any:
    """``value`` read as type ``hint``: records, ``list[R]``, ``dict[str, R]``, ``R | None``."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _from_json(inner[0], value) if len(inner) == 1 else value
    if origin is list and args:
        return [_from_json(args[0], v) for v in value]
    if origin is dict and len(args) == 2:
        return {k: _from_json(args[1], v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value)
    return value


# --------------------------------------------------------------------------- decoding


@dataclass
class TestScores(Record):
    """Decoded test sentences, scored (sacrebleu 13a): ``n_sentences`` of the split's
    ``n_test`` decoded with ``beam`` (1 = greedy), ε removed; ``examples`` are
    ``[source, reference, hypothesis]`` triples."""

    __test__ = False  # not a pytest class

    bleu: float
    chrf: float
    empty_share: float
    n_sentences: int
    beam: int
    length_ratio: float | None = None
    bleu_signature: str | None = None
    n_test: int | None = None  # None: written before it was recorded
    examples: list[list[str]] = field(default_factory=list)

    def sample(self) -> str:
        """``"200 test sentences (all), beam 5"`` / ``"200 of 1,000 test sentences, greedy"``."""
        n, total = self.n_sentences, self.n_test
        dec = "greedy" if self.beam == 1 else f"beam {self.beam}"
        if total is None:
            return f"{n:,} test sentences, {dec}"
        what = "test sentences (all)" if n == total else f"of {total:,} test sentences"
        return f"{n:,} {what}, {dec}"


# --------------------------------------------------------------------------- the paper's


@dataclass
class Analysis(Record):
    """Teacher-forced analysis of ``n_sentences`` of the ``n_valid`` validation sentences.

    ``copy_probability``: mean ``p_j(input_j)`` over the ``copy_positions`` positions whose
    input is a target token. Built by :func:`latalign.reproduce.validation.analyse`; the
    nested dicts are :mod:`latalign.reproduce.analysis`'s: ``ctc_vs_ce``
    (:func:`~latalign.reproduce.analysis.summarize_ctc_versus_ce`), ``paths``
    (:func:`~latalign.reproduce.analysis.path_shares` and ``causal``), ``floor``
    (:func:`~latalign.reproduce.analysis.loss_floor_check`), ``figures`` (Figure 3 data).
    A doubled-CTC run has only the copy statistics.
    """

    n_sentences: int
    copy_probability: float
    copy_positions: int
    mean_target_length: float | None = None
    n_valid: int | None = None  # None: written before it was recorded
    ctc_vs_ce: dict[str, Any] | None = None
    paths: dict[str, Any] | None = None
    floor: dict[str, Any] | None = None
    figures: list[dict[str, Any]] | None = None

    def sample(self, what: str = "") -> str:
        """``"200 validation sentences (all)"`` / ``"200 of 1,014 validation sentences"``."""
        n, total = self.n_sentences, self.n_valid
        if total is None:
            s = "validation sentences"
        else:
            s = "validation sentences (all)" if n == total else f"of {total:,} validation sentences"
        return f"{n:,} {s}" + (f", {what}" if what else "")


@dataclass
class ExperimentResult(Record):
    """One of the paper's experiments (``ce`` … ``doubled_ctc``, ``baseline``).

    ``updates`` trained; ``final_*`` from the training log (valid: the last validation,
    dropout off; train: the last logging interval's mean, dropout on). The loss curves
    (``[step, loss]`` pairs; valid also the CE) and the first crossings of 0.1 nats/token
    (:func:`latalign.reproduce.analysis.first_crossing`) are there for trained runs;
    ``source``/``run_dir``/``recipe`` for the baseline. ``seconds``: ``train`` and ``eval``.
    """

    name: str
    criterion: str | None
    updates: int
    test: TestScores
    seconds: dict[str, float]
    final_valid_loss: float | None = None
    final_valid_ce: float | None = None
    final_train_loss: float | None = None
    options: dict[str, Any] | None = None
    tied_output: bool | None = None
    train_curve: list[list[float]] | None = None
    valid_curve: list[list[float | None]] | None = None
    updates_per_epoch: int | None = None
    epoch_target_tokens: int | None = None
    target_tokens_per_update: float | None = None
    # None, written as null: never below 0.1 (or no training log: the baseline)
    first_train_below: dict[str, Any] | None = field(
        default=None, metadata={"key": "first_train_below_0.1", "null": True}
    )
    first_valid_below: dict[str, Any] | None = field(
        default=None, metadata={"key": "first_valid_below_0.1", "null": True}
    )
    analysis: Analysis | None = None
    source: str | None = None
    run_dir: str | None = None
    recipe: str | None = None


@dataclass
class MapRow(Record):
    """One objective of the theorem's map: ``updates`` trained, its ``test`` decoding;
    ``predicted`` by :func:`latalign.reproduce.analysis.predict_objective`; ``measured``,
    ``agrees`` and ``informative`` filled in by
    :func:`latalign.reproduce.theorem_map.classify_map`.

    ``reused`` names the experiment whose run the row is (``"ce"`` for the objectives with
    only the trivial path at ``m = n``: cross entropy by construction, not trained again);
    their ``final_valid_loss`` is the objective's own loss of that run's final model and
    ``final_valid_ce`` its cross entropy, both teacher-forced on the same validation
    sentences (:func:`latalign.reproduce.theorem_map.ce_rows`); None: the row trained its
    own run in ``{out}/map/``. ``seconds``: the row's own training and evaluation."""

    key: str
    operators: list[str]
    aggregate: str
    causal: bool
    updates: int
    final_valid_loss: float
    final_valid_ce: float | None
    final_train_loss: float | None
    test: TestScores
    predicted: str
    prediction_note: str
    only_trivial_path: bool
    seconds: float
    reused: str | None = None
    measured: str | None = None
    agrees: bool | None = None
    informative: bool | None = None

    @property
    def bleu(self) -> float:
        return self.test.bleu

    @property
    def empty_share(self) -> float:
        return self.test.empty_share


@dataclass
class MapResult(Record):
    """The map: its rows (the reference first) and their classification against
    ``reference`` by ``rule``; ``agreement`` over all rows, ``informative_agree`` of the
    ``informative`` ones; ``updates`` of each trained objective and ``reference_updates``
    of the reference's run (``ce``'s; equal unless ``--updates map=N`` says otherwise)."""

    rows: list[MapRow]
    reference: str
    rule: str
    bleu_clause: bool
    agreement: float
    informative: int
    informative_agree: int
    seconds: float = 0.0
    updates: int | None = None
    reference_updates: int | None = None


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim(Record):
    """One row of the claims table.

    ``kind``: one of :data:`KINDS`; ``criterion``: what ✓ means; ``measured``: the figure,
    as text; ``sample``: which and how many sentences (``"200 test sentences (all), beam
    5"``); ``values``: the numbers behind ``measured``; ``passed``: True (✓), False (✗) or
    None (— : not run, undecided, or a finding).
    """

    id: str
    claim: str
    section: str
    kind: str
    criterion: str
    measured: str
    sample: str
    values: dict[str, Any]
    passed: bool | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"expected a claim kind in {KINDS}; found {self.kind!r}")

    @property
    def mark(self) -> str:
        """✓, ✗ or —."""
        return MARK[self.passed]


@dataclass(frozen=True)
class ClaimSpec:
    """The fixed part of a claim: what it says, where the paper says it, its kind and what
    ✓ means; :meth:`measured` and :meth:`not_run` make the :class:`Claim`."""

    id: str
    claim: str
    section: str
    kind: str
    criterion: str

    def measured(
        self,
        measured: str,
        sample: str,
        values: dict[str, Any],
        passed: bool | None,
        *,
        criterion: str | None = None,
    ) -> Claim:
        """The claim as measured (``criterion`` replaces the spec's when the preset decides)."""
        return Claim(self.id, self.claim, self.section, self.kind, criterion or self.criterion,
                     measured, sample, values, passed)  # fmt: skip

    def not_run(self, needs: list[str], *, criterion: str | None = None) -> Claim:
        """The claim when the experiments it ``needs`` did not run."""
        return self.measured(f"not run (needs {', '.join(needs)})", "—", {}, None,
                             criterion=criterion)  # fmt: skip


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    """Everything a reproduction measured, by experiment name (the paper's experiments as
    :class:`ExperimentResult`, the map as :class:`MapResult`, each group's own record or
    dict), then ``meta`` (command, preset, seed, data, …) and the ``claims``.

    :meth:`to_json` writes ``results.json``'s layout: ``experiments`` (the paper's),
    ``map``, ``groups`` (the rest), ``meta``, ``claims``.
    """

    experiments: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)

    def paper(self) -> dict[str, ExperimentResult]:
        """The paper's experiments that ran (not the map)."""
        return {k: v for k, v in self.experiments.items() if isinstance(v, ExperimentResult)}

    @property
    def map(self) -> MapResult | None:
        return next((v for v in self.experiments.values() if isinstance(v, MapResult)), None)

    def groups(self) -> dict[str, Any]:
        """The experiment groups' records (everything but the paper's and the map)."""
        return {
            k: v
            for k, v in self.experiments.items()
            if not isinstance(v, (ExperimentResult, MapResult))
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "experiments": to_json(self.paper()),
            "groups": to_json(self.groups()),
        }
        if self.map is not None:
            out["map"] = self.map.to_json()
        return out | {"meta": self.meta, "claims": to_json(self.claims)}
