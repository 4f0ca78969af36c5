"""Tests for translation metrics."""

from __future__ import annotations

import pytest

from latalign.translate.metrics import evaluate_translations

REFS = [
    "A man in an orange hat starring at something.",
    "A Boston Terrier is running on lush green grass in front of a white fence.",
    "A girl in karate uniform breaking a stick with a front kick.",
]


def test_perfect_hypotheses_score_100():
    result = evaluate_translations(REFS, REFS)
    assert result["bleu"] == pytest.approx(100.0)
    assert result["chrf"] == pytest.approx(100.0)
    assert result["empty_share"] == 0.0
    assert result["length_ratio"] == pytest.approx(1.0)
    assert result["n_sentences"] == 3
    sig = result["bleu_signature"]
    assert "tok:13a" in sig and "case:mixed" in sig


def test_empty_hypotheses_score_zero():
    result = evaluate_translations(["", " ", ""], REFS)
    assert result["bleu"] == 0.0
    assert result["empty_share"] == 1.0
    assert result["length_ratio"] == 0.0


def test_partial_output_and_case_sensitivity():
    hyps = [REFS[0], REFS[1].upper(), ""]
    result = evaluate_translations(hyps, REFS)
    assert 0.0 < result["bleu"] < 100.0
    assert result["empty_share"] == pytest.approx(1 / 3)
    assert 0.0 < result["length_ratio"] < 1.0
    lowered = evaluate_translations(hyps, REFS, lowercase=True)
    assert lowered["bleu"] > result["bleu"]


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="expected as many hypotheses as references"):
        evaluate_translations(REFS[:2], REFS)
    with pytest.raises(ValueError, match="single str"):
        evaluate_translations("a b c", "a b c")
    with pytest.raises(ValueError, match="at least one"):
        evaluate_translations([], [])
