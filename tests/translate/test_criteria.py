"""Criteria: each against an independent reference on small random batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latalign.translate.batching import collate
from latalign.translate.config import TrainConfig
from latalign.translate.criteria import criterion_loss, label_smoothed_nll_loss
from latalign.translate.loss import teacher_forced_loss
from latalign.translate.registry import CRITERIA, get_criterion

PAD, BLANK, V = 0, 4, 12


def make_batch(targets: list[list[int]]):
    """A Batch whose targets are ``y + [eos]`` (sources are irrelevant to criteria)."""
    examples = [(i, torch.tensor([5, 6]), torch.tensor(t)) for i, t in enumerate(targets)]
    return collate(examples, PAD, 1, 2)


def random_batch(seed: int = 0, b: int = 4, no_repeats: bool = False):
    g = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(b):
        n = int(torch.randint(1, 7, (1,), generator=g))
        seq: list[int] = []
        while len(seq) < n:
            tok = int(torch.randint(5, V, (1,), generator=g))
            if no_repeats and seq and seq[-1] == tok:
                continue
            seq.append(tok)
        if no_repeats and seq[-1] == 2:
            seq.append(5)
        targets.append(seq)
    batch = make_batch(targets)
    logits = torch.randn(b, batch.target.size(1), V, generator=g, dtype=torch.float64)
    return logits.requires_grad_(), batch


def score(name, logits, batch, **options):
    """Criterion ``name`` under teacher forcing: one prediction per target (m = m)."""
    lengths = batch.target_lengths
    return criterion_loss(name, logits, batch.target, lengths, lengths, blank=BLANK, **options)


def per_sentence_ce(logits, batch):
    nll = F.cross_entropy(logits.transpose(1, 2), batch.target, ignore_index=PAD, reduction="none")
    return nll.sum(1)


def test_registry_names():
    assert set(CRITERIA) == {
        "ce",
        "label_smoothed_ce",
        "ctc",
        "axe",
        "causal_axe",
        "latent",
        "doubled_ctc",
        "dag",  # translate/nat/dag.py (--arch dag only)
    }
    assert get_criterion("axe").options == {"delta": 1.0}
    assert get_criterion("label_smoothed_ce").options == {"epsilon": 0.1}
    assert set(get_criterion("latent").options) >= {"operators", "aggregate", "causal"}
    assert get_criterion("doubled_ctc").layout == "doubled"


def test_unknown_criterion_lists_known_names():
    with pytest.raises(ValueError, match="label_smoothed_ce") as err:
        get_criterion("cross_entropy")
    assert "cross_entropy" in str(err.value)


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="expected options of criterion 'ce'.*delta"):
        TrainConfig(criterion="ce", delta=0.5)
    TrainConfig(criterion="axe", delta=0.5)


def test_ce_equals_torch_cross_entropy_sum():
    logits, batch = random_batch(1)
    loss, stats = score("ce", logits, batch)
    ref = F.cross_entropy(
        logits.reshape(-1, V), batch.target.reshape(-1), ignore_index=PAD, reduction="sum"
    )
    torch.testing.assert_close(loss.double(), ref)
    assert stats["ntokens"] == int(batch.target_lengths.sum()) == batch.ntokens
    assert stats["nsentences"] == 4
    assert stats["nll_loss"] == pytest.approx(float(ref.detach()))
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_label_smoothing_zero_is_ce_and_positive_differs():
    logits, batch = random_batch(2)
    ce, _ = score("ce", logits, batch)
    ls0, stats0 = score("label_smoothed_ce", logits, batch, epsilon=0.0)
    torch.testing.assert_close(ls0, ce)
    ls, stats = score("label_smoothed_ce", logits, batch)
    assert stats["nll_loss"] == pytest.approx(float(ce.detach()), rel=1e-5)
    assert float(ls.detach()) != pytest.approx(float(ce.detach()))


def test_label_smoothed_formula_by_hand():
    lprobs = torch.log_softmax(torch.randn(3, 5, dtype=torch.float64), -1)
    target = torch.tensor([1, 0, 3])  # middle one is pad
    eps = 0.2
    loss, nll = label_smoothed_nll_loss(lprobs, target, eps, ignore_index=0)
    expected = 0.0
    for r in (0, 2):
        t = int(target[r])
        # fairseq: (1 - eps - eps/(V-1)) * nll + eps/(V-1) * sum over all V
        expected += (1 - eps - eps / 4) * -lprobs[r, t] + eps / 4 * -lprobs[r].sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, -(lprobs[0, 1] + lprobs[2, 3]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_axe_at_most_ce_per_sentence(seed):
    logits, batch = random_batch(seed)
    ce = per_sentence_ce(logits, batch).detach()
    for i in range(batch.target.size(0)):
        one = make_batch([batch.target[i, : batch.target_lengths[i] - 1].tolist()])
        m = int(batch.target_lengths[i])
        sl = logits[i : i + 1, :m]
        axe = score("axe", sl, one)[0].detach()
        cax = score("causal_axe", sl, one)[0].detach()
        assert float(axe) <= float(ce[i]) + 1e-6
        # causal alignments are a subset of all alignments: the max over fewer is lower
        assert float(axe) <= float(cax) + 1e-6 <= float(ce[i]) + 2e-6


def test_axe_summed_over_batch_and_delta_matters():
    logits, batch = random_batch(3)
    total, stats = score("axe", logits, batch)
    assert stats["loss"] == pytest.approx(total.detach().item())
    assert "nll_loss" not in stats
    low, _ = score("axe", logits, batch, delta=0.0)
    assert low.detach().item() <= total.detach().item()
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_latent_schematic_ctc_sum_equals_ce_at_equal_lengths():
    logits, batch = random_batch(4)
    ce, _ = score("ce", logits, batch)
    lat, _ = score(
        "latent", logits, batch, operators=("align", "clone_target", "delimiter"), aggregate="sum"
    )
    torch.testing.assert_close(lat.double(), ce.double(), rtol=1e-6, atol=1e-6)


def test_latent_axe_operators_max_equals_axe():
    logits, batch = random_batch(5)
    axe, _ = score("axe", logits, batch)
    lat, _ = score(
        "latent",
        logits,
        batch,
        operators=("align", "clone_prediction", "delimiter"),
        aggregate="max",
    )
    torch.testing.assert_close(lat, axe)


def test_ctc_equals_ce_without_equal_neighbours():
    logits, batch = random_batch(6, no_repeats=True)
    ce, _ = score("ce", logits, batch)
    ctc, _ = score("ctc", logits, batch)
    torch.testing.assert_close(ctc.double(), ce.double(), rtol=1e-6, atol=1e-6)


def test_ctc_infeasible_repeat_contributes_zero():
    batch = make_batch([[7, 7, 8], [5, 6]])
    logits = torch.randn(2, batch.target.size(1), V, dtype=torch.float64, requires_grad=True)
    ctc, _ = score("ctc", logits, batch)
    ce_second = per_sentence_ce(logits, batch)[1]
    torch.testing.assert_close(ctc.double(), ce_second)
    ctc.backward()
    assert float(logits.grad[0].abs().sum()) == 0.0


def test_shape_mismatch_is_value_error():
    logits, batch = random_batch(7)
    with pytest.raises(ValueError, match="predictions per sentence"):
        score("ce", logits[:, :-1], batch)
    with pytest.raises(ValueError, match="expected logits"):  # the autoregressive wrapper
        teacher_forced_loss("ce").score(logits[:, :-1], batch, update=0)
