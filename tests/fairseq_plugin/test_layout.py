"""The plugin's pure parts (no fairseq needed: these run in CI) and its import boundary."""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latalign as la
from latalign.fairseq_plugin.layout import (
    ctc_collapse,
    dag_lookahead,
    dag_transitions,
    has_alignment,
    sentence_targets,
    upsampled_decoder_input,
    upsampled_lengths,
)

SRC = Path(__file__).resolve().parents[2] / "src"
HAS_FAIRSEQ = importlib.util.find_spec("fairseq") is not None


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=300,
    )


def test_import_latalign_does_not_import_fairseq():
    r = _run(
        "import sys\n"
        "def fs(): return sorted(m for m in sys.modules if m.split('.')[0] == 'fairseq')\n"
        "import latalign, latalign.align, latalign.translate, latalign.reproduce, latalign.cli\n"
        "print(fs())\n"
        "import latalign.fairseq_plugin.layout\n"
        "print(len(fs()) > 0)"
    )
    assert r.returncode == 0, r.stderr
    before, after = r.stdout.strip().splitlines()
    assert before == "[]"
    # the plugin package registers with fairseq where it is installed, and only there
    assert after == str(HAS_FAIRSEQ)


def test_plugin_imports_only_the_loss_library_of_latalign():
    for path in (SRC / "latalign" / "fairseq_plugin").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for layer in ("latalign.translate", "latalign.reproduce", "from latalign import translate"):
            assert layer not in text, (path.name, layer)
    for path in (SRC / "latalign").rglob("*.py"):
        if "fairseq_plugin" not in path.parts:
            text = path.read_text(encoding="utf-8")
            assert "import fairseq" not in text and "from fairseq" not in text, path


@pytest.mark.skipif(HAS_FAIRSEQ, reason="checks the message given where fairseq is missing")
def test_main_without_fairseq_is_one_line_exit_2():
    r = subprocess.run(
        [sys.executable, "-m", "latalign.fairseq_plugin"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=300,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "expected fairseq" in r.stderr


def test_sentence_targets_drop_bos_eos_pad_and_pack():
    pad, bos, eos = 1, 0, 2
    rows = [[0, 5, 6, 7, 2], [0, 8, 2, 1, 1], [9, 9, 2, 1, 1], [0, 2, 1, 1, 1]]
    targets, lengths = sentence_targets(torch.tensor(rows), pad=pad, bos=bos, eos=eos)
    want = [[t for t in r if t not in (pad, bos, eos)] for r in rows]
    assert lengths.tolist() == [len(w) for w in want]
    assert targets.shape == (4, 3)
    for row, w in zip(targets.tolist(), want):
        assert row == w + [pad] * (3 - len(w))


def test_sentence_targets_empty_width_and_bad_shape():
    targets, lengths = sentence_targets(torch.tensor([[0, 2], [0, 2]]), pad=1, bos=0, eos=2)
    assert targets.tolist() == [[1], [1]] and lengths.tolist() == [0, 0]
    with pytest.raises(ValueError, match="expected target of shape"):
        sentence_targets(torch.tensor([1, 2]), pad=1, bos=0, eos=2)


@pytest.mark.parametrize("scale", [1, 1.5, 2, 3, 4, 0.3, 8])
def test_upsampled_lengths_is_exact_ceil(scale):
    lengths = torch.arange(0, 60)
    got = upsampled_lengths(lengths, scale, minimum=2, maximum=100).tolist()
    want = [min(max(math.ceil(scale * n), 2), 100) for n in range(60)]
    # float64 ceil of an exact product: 3 * 7 = 21, not 22
    assert got == want


@pytest.mark.parametrize(
    "scale,minimum,maximum",
    [(0, 1, None), (-1, 1, None), (float("inf"), 1, None), (2, 0, None), (2, 3, 2)],
)
def test_upsampled_lengths_refuses_bad_options(scale, minimum, maximum):
    with pytest.raises(ValueError, match="expected"):
        upsampled_lengths(torch.tensor([3]), scale, minimum=minimum, maximum=maximum)


def test_upsampled_decoder_input():
    tokens = upsampled_decoder_input(torch.tensor([2, 5, 3]), fill=3, pad=1, bos=0, eos=2)
    assert tokens.tolist() == [[0, 2, 1, 1, 1], [0, 3, 3, 3, 2], [0, 3, 2, 1, 1]]
    plain = upsampled_decoder_input(torch.tensor([1, 2]), fill=7, pad=1)
    assert plain.tolist() == [[7, 1], [7, 7]]
    with pytest.raises(ValueError, match="expected lengths"):
        upsampled_decoder_input(torch.tensor([0, 2]), fill=3, pad=1)


def test_dag_transitions_normalised_over_later_vertices_only():
    torch.manual_seed(0)
    scores = torch.randn(3, 6, 6, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 1])
    t = dag_transitions(scores, lengths)
    for b, length in enumerate(lengths.tolist()):
        for u in range(6):
            for v in range(6):
                if not (u < v < length):
                    assert t[b, u, v] == float("-inf")
            if u < length - 1:
                row = scores[b, u, u + 1 : length]
                assert torch.allclose(t[b, u, u + 1 : length], row.log_softmax(0))


def test_dag_transitions_gradient_is_finite_through_the_dag_loss():
    """Padding rows (all masked) and NaN scores outside the graph must not poison gradients."""
    torch.manual_seed(1)
    n, length, vocab = 3, 7, 5
    scores = torch.randn(n, length, length, dtype=torch.float64)
    lengths = torch.tensor([7, 4, 2])
    for b, lb in enumerate(lengths.tolist()):
        scores[b, lb:, :] = float("nan")
        scores[b, :, lb:] = float("nan")
    scores.requires_grad_(True)
    logits = torch.randn(n, length, vocab, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 3, 4], [0, 1, 2, 0], [3, 4, 0, 0]])
    target_lengths = torch.tensor([4, 3, 2])
    loss = la.dag_loss(
        logits,
        dag_transitions(scores, lengths),
        targets,
        lengths,
        target_lengths,
        from_logits=True,
        reduction="sum",
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(scores.grad).all() and torch.isfinite(logits.grad).all()
    for b, lb in enumerate(lengths.tolist()):
        assert (scores.grad[b, lb:] == 0).all() and (scores.grad[b, :, lb:] == 0).all()
        # the lower triangle is masked: no gradient there either
        assert (scores.grad[b].tril() == 0).all()
    assert scores.grad.abs().sum() > 0


def test_dag_transitions_gradcheck():
    torch.manual_seed(2)
    scores = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 3])

    def f(s):
        t = dag_transitions(s, lengths)
        return torch.where(torch.isfinite(t), t, torch.zeros_like(t))

    assert torch.autograd.gradcheck(f, (scores,))


def test_dag_transitions_bad_shapes():
    with pytest.raises(ValueError, match="expected scores"):
        dag_transitions(torch.zeros(2, 3, 4), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="expected lengths"):
        dag_transitions(torch.zeros(2, 3, 3), torch.tensor([3]))


def _random_case(seed: int, n_max: int = 5, m_max: int = 7, vocab: int = 4):
    g = torch.Generator().manual_seed(seed)
    batch = 6
    n = torch.randint(0, n_max + 1, (batch,), generator=g)
    m = torch.randint(1, m_max + 1, (batch,), generator=g)
    targets = torch.randint(1, vocab, (batch, n_max), generator=g)  # 0 is the blank
    return targets, n, m, vocab


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("loss", ["ctc", "axe", "dag"])
def test_has_alignment_agrees_with_the_losses(loss, seed):
    """A sentence has no alignment exactly where latalign's loss is inf."""
    targets, n, m, vocab = _random_case(seed)
    g = torch.Generator().manual_seed(100 + seed)
    logits = torch.randn(targets.size(0), int(m.max()), vocab, generator=g, dtype=torch.float64)
    if loss == "ctc":
        value = la.ctc_loss(logits, targets, m, n, reduction="none", from_logits=True)
    elif loss == "axe":
        value = la.axe_loss(logits, targets, m, n, reduction="none", from_logits=True)
    else:
        lm = int(m.max())
        trans = dag_transitions(torch.randn(targets.size(0), lm, lm, generator=g).double(), m)
        value = la.dag_loss(logits, trans, targets, m, n, reduction="none", from_logits=True)
    assert has_alignment(loss, targets, n, m).tolist() == torch.isfinite(value).tolist()


def test_has_alignment_unknown_loss():
    with pytest.raises(ValueError, match="expected loss"):
        has_alignment("ce", torch.zeros(1, 1), torch.tensor([1]), torch.tensor([1]))


def test_ctc_collapse_matches_groupby():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 3, (8, 9), generator=g)
    scores = torch.randn(8, 9, generator=g)
    lengths = torch.randint(1, 10, (8,), generator=g)
    out, out_scores = ctc_collapse(tokens, scores, lengths, pad=7)
    for b in range(8):
        row = tokens[b, : lengths[b]].tolist()
        want = [k for k, _ in itertools.groupby(row)]
        firsts = [j for j in range(len(row)) if j == 0 or row[j] != row[j - 1]]
        got = out[b].tolist()
        assert got[: len(want)] == want and all(t == 7 for t in got[len(want) :])
        assert out_scores[b, : len(want)].tolist() == scores[b, firsts].tolist()


def _lookahead_reference(trans, scores, length):
    path = [0]
    while path[-1] < length - 1:
        u = path[-1]
        best = max(range(u + 1, length), key=lambda v: (trans[u][v] + scores[v], -v))
        path.append(best)
    return path


def test_dag_lookahead_matches_a_plain_loop():
    g = torch.Generator().manual_seed(4)
    n, length = 5, 8
    lengths = torch.tensor([8, 5, 1, 2, 6])
    trans = dag_transitions(torch.randn(n, length, length, generator=g).double(), lengths)
    scores = torch.randn(n, length, generator=g).double()
    tokens = torch.randint(3, 20, (n, length), generator=g)
    out, out_scores = dag_lookahead(trans, tokens, scores, lengths, pad=1)
    for b, lb in enumerate(lengths.tolist()):
        path = _lookahead_reference(trans[b].tolist(), scores[b].tolist(), lb)
        assert path[0] == 0 and path[-1] == lb - 1
        k = len(path)
        assert out[b, :k].tolist() == tokens[b, path].tolist()
        assert (out[b, k:] == 1).all()
        assert out_scores[b, :k].tolist() == scores[b, path].tolist()
