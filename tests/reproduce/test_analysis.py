"""Unit tests of the reproduction's measurements on hand-built inputs."""

from __future__ import annotations

import math
import random

import pytest
import torch

import latalign as la
import latalign.reproduce.analysis as an
from latalign.align.bruteforce import enumerate_paths
from latalign.reproduce.analysis import all_map_objectives, objective_key, parse_objective_key
from latalign.translate.doubled import ctc_collapse, double_inputs

A, CT, CP, D = la.OPERATORS
BLANK = 4


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ops", an.operator_subsets())
def test_map_prediction_rule(ops, causal):
    """The rule derived from the grid, written out: non-trivial paths need clone_prediction
    plus a move that consumes a prediction alone (clone_target or delimiter); the exploit
    needs them and no causal restriction."""
    p = an.predict_objective(ops, causal)
    rich = CP in ops and (CT in ops or D in ops)
    assert p.only_trivial_path == (not rich)
    assert p.degenerate == (rich and not causal)
    assert (p.note() != "") and isinstance(p.lookback_operators, tuple)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ops", an.operator_subsets())
def test_path_counts_match_bruteforce(ops, causal):
    n = 4
    obj = la.Objective.make(ops, "max", causal=causal)
    lp = [[math.log(1 / 8)] * 8 for _ in range(n)]
    paths = enumerate_paths(lp, [5, 6, 7, 5], obj, blank=BLANK)
    assert an.predict_objective(ops, causal, n=n).num_paths == len(paths)


@pytest.mark.parametrize("ops", an.operator_subsets())
def test_path_exists_is_where_the_loss_is_finite(ops):
    """The NAT map's feasibility against the library: the loss of ``n`` targets scored by
    ``m`` predictions (distinct neighbours, so no set trips on repeats) is finite exactly
    when :func:`path_exists` says so, over every (n, m) with 1 ≤ n, m ≤ 6; and the closed
    form: m > n needs clone_target or delimiter, m < n needs clone_prediction."""
    torch.manual_seed(0)
    for n in range(1, 7):
        for m in range(1, 7):
            logits = torch.randn(1, m, 12)
            target = torch.tensor([[5 + (i % 2) for i in range(n)]])
            loss = la.latent_alignment_loss(
                logits, target, torch.tensor([m]), torch.tensor([n]), operators=ops,
                from_logits=True, blank=BLANK, reduction="none",
            )  # fmt: skip
            assert an.path_exists(tuple(ops), n, m) == bool(torch.isfinite(loss).all()), (n, m)
            closed = m == n or (m > n and bool({CT, D} & set(ops))) or (m < n and CP in ops)
            assert an.path_exists(tuple(ops), n, m) == closed, (n, m)
    assert an.feasible_share((A,), [(3, 3), (3, 6), (3, 6), (2, 4)]) == 0.25
    with pytest.raises(ValueError, match="at least one"):
        an.feasible_share((A,), [])


def test_map_prediction_bad_input():
    with pytest.raises(ValueError, match="expected an operator set"):
        an.predict_objective((CT, D), False)
    with pytest.raises(ValueError, match="expected an operator set"):
        an.predict_objective((A, "copy"), False)


def test_objective_keys_round_trip():
    keys = all_map_objectives()
    assert len(keys) == len(set(keys)) == 32
    for k in keys:
        ops, agg, causal = parse_objective_key(k)
        assert objective_key(ops, agg, causal) == k
    for bad in ("align/sum", "delimiter+align/sum/causal", "align/avg/causal", "x/sum/noncausal"):
        with pytest.raises(ValueError, match="expected"):
            parse_objective_key(bad)


def test_classify_measured():
    kw = dict(reference_loss=2.0, reference_bleu=40.0)
    assert an.classify_measured(0.1, 0.9, 0.0, **kw) == "degenerate"
    assert an.classify_measured(0.1, 0.0, 5.0, **kw) == "degenerate"  # BLEU collapsed
    assert an.classify_measured(0.1, 0.0, 35.0, **kw) == "healthy"  # low loss, translates
    assert an.classify_measured(1.9, 1.0, 0.0, **kw) == "healthy"  # not near zero


def _figure3_logits(target: list[int], vocab: int = 12) -> torch.Tensor:
    """The paper's Figure 3 distribution under teacher forcing: p_1 = ε, p_j copies its input
    y_{j−1}, and the last prediction splits between y_{L−1} and eos."""
    L = len(target)
    logits = torch.full((L, vocab), -20.0)
    logits[0, BLANK] = 10.0
    for j in range(1, L - 1):
        logits[j, target[j - 1]] = 10.0
    logits[L - 1, target[L - 2]] = 10.0
    logits[L - 1, target[L - 1]] = 10.0
    return logits


def test_degenerate_path_detected_on_figure3():
    target = [5, 6, 7, 8, 9, 2]  # y_1 … y_5 eos
    L = len(target)
    logits = _figure3_logits(target)[None]
    t = torch.tensor([target])
    lengths = torch.tensor([L])
    best = la.best_alignment(logits, t, lengths, lengths, blank=BLANK, from_logits=True)[0]
    assert best.operators == an.degenerate_path(L)
    assert best.alpha == tuple((j,) for j in range(2, L + 1)) + ((L,),)  # Figure 3's α
    shares = an.path_shares([best.operators], [L])
    assert shares["degenerate_share"] == 1.0 and shares["trivial_share"] == 0.0
    assert shares["other_paths"][0]["summary"] == "clone_prediction×1 + delimiter×1"
    # the loss is the floor: 2·log 2 for the shared last prediction
    loss = la.axe_loss(logits, t, lengths, lengths, blank=BLANK, from_logits=True, reduction="sum")
    assert float(loss) == pytest.approx(2 * math.log(2), abs=1e-3)
    fl = an.loss_floor_check([float(loss)], [target], [best.alpha], [best.operators])
    assert fl["floor"] == pytest.approx(float(loss) / L, abs=1e-3) and fl["below_count"] == 0
    # causal AXE cannot use it: its best path is trivial here
    causal = la.best_alignment(
        logits, t, lengths, lengths, blank=BLANK, from_logits=True, causal=True
    )
    assert an.path_summary(causal[0].operators) != an.path_summary(an.degenerate_path(L))


def test_input_copy_probability():
    target = [5, 6, 7, 2]
    prev = torch.tensor([[1, 5, 6, 7, 0]])  # bos y1 y2 y3 pad
    logits = torch.cat([_figure3_logits(target), torch.zeros(1, 12)])[None]  # padded row
    s, n = an.input_copy_probability(logits, prev, pad_id=0, bos_id=1)
    assert n == 3  # positions 2..L: the inputs that are target tokens
    # positions 2, 3 copy with p ≈ 1; the last splits 0.5 / 0.5
    assert s / n == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-3)
    # doubled inputs (bos bos y1 y1 …): every target-token position counts, bos and pad not
    doubled = double_inputs(prev)
    s, n = an.input_copy_probability(torch.zeros(1, 10, 12), doubled, pad_id=0, bos_id=1)
    assert n == 6 and s == pytest.approx(6 / 12)


def test_ctc_versus_ce():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 10, dtype=torch.float64)
    target = torch.tensor([[5, 6, 7, 8, 2], [5, 5, 6, 2, 0], [6, 7, 2, 0, 0]])
    lengths = torch.tensor([5, 4, 3])
    out = an.ctc_versus_ce(logits, target, lengths, BLANK)
    assert out["repeats"] == [False, True, False]
    s = an.summarize_ctc_versus_ce(out["ctc"], out["ce"], out["repeats"])
    assert s["max_abs_diff"] < 1e-9
    assert (s["repeat_count"], s["repeat_infinite"]) == (1, 1)
    assert s["repeat_share"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="expected"):
        an.summarize_ctc_versus_ce([], [], [])


def test_first_below():
    hist = [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.05}, {"step": 30, "loss": 0.01}]
    assert an.first_below(hist, "loss", 0.1)["step"] == 20
    assert an.first_below(hist, "loss", 0.001) is None


def test_paths_helpers():
    assert an.degenerate_path(3) == (D, A, A, CP)
    assert an.trivial_path(3) == (A, A, A)
    assert an.path_summary((A, A)) == "trivial"
    with pytest.raises(ValueError):
        an.path_shares([], [])


def test_top_k_table():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    table = an.top_k_table(logits, 2, lambda i: "abc"[i], 2)
    assert [p for p, _ in table[0]] == ["b", "c"] and [p for p, _ in table[1]][0] == "a"
    assert all(0 <= v <= 1 for row in table for _, v in row)


def test_doubled_layout_and_collapse():
    prev = torch.tensor([[1, 5, 6, 0]])
    assert double_inputs(prev).tolist() == [[1, 1, 5, 5, 6, 6, 0, 0]]
    assert ctc_collapse([4, 5, 5, 4, 5, 6, 2, 7], blank_id=4, eos_id=2) == [5, 5, 6]
    assert ctc_collapse([4, 4, 4], blank_id=4, eos_id=2) == []


def test_doubled_ctc_admits_the_copy_path():
    """With m = 2L, CTC can score ε ε y_1 y_1 … (each pair copying its input), so a model
    that copies its doubled input gets a low CTC loss: the exploit the paper argued."""
    rng = random.Random(0)
    target = [rng.randrange(5, 12) for _ in range(5)] + [2]
    L = len(target)
    prev = [1] + target[:-1]
    doubled = double_inputs(torch.tensor([prev]))[0].tolist()  # 2L inputs
    logits = torch.full((1, 2 * L, 12), -20.0)
    for t, x in enumerate(doubled):
        logits[0, t, BLANK if x == 1 else x] = 10.0  # copy the input (ε for bos)
    logits[0, 2 * L - 1, 2] = 10.0  # the last prediction also offers eos
    loss = la.ctc_loss(
        logits, torch.tensor([target]), torch.tensor([2 * L]), torch.tensor([L]),
        blank=BLANK, from_logits=True, reduction="sum",
    )  # fmt: skip
    assert float(loss) < 2.0  # ~log 2 for the shared last prediction, versus ~20 per token
