"""Bad input raises ValueError / TypeError with an "expected … found …" message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import latalign as la


def good():
    lp = torch.randn(2, 5, 6).log_softmax(-1)
    return lp, torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([5, 4]), torch.tensor([3, 2])


CASES = [
    ("rank", lambda lp, t, m, n: (lp[0], t, m, n), ValueError, "(N, T, C)"),
    ("targets rank", lambda lp, t, m, n: (lp, t[0], m, n), ValueError, "(N, S)"),
    ("batch mismatch", lambda lp, t, m, n: (lp, t[:1], m, n), ValueError, "batch size"),
    ("lengths batch", lambda lp, t, m, n: (lp, t, m[:1], n), ValueError, "input_lengths of length"),
    (
        "input length too long",
        lambda lp, t, m, n: (lp, t, torch.tensor([6, 4]), n),
        ValueError,
        "input_lengths[0] = 6",
    ),
    (
        "input length zero",
        lambda lp, t, m, n: (lp, t, torch.tensor([5, 0]), n),
        ValueError,
        "input_lengths[1] = 0",
    ),
    (
        "target length negative",
        lambda lp, t, m, n: (lp, t, m, torch.tensor([-1, 2])),
        ValueError,
        "target_lengths[0] = -1",
    ),
    (
        "target length too long",
        lambda lp, t, m, n: (lp, t, m, torch.tensor([3, 4])),
        ValueError,
        "target_lengths[1] = 4",
    ),
    (
        "target id too large",
        lambda lp, t, m, n: (lp, torch.tensor([[1, 9, 3], [4, 5, 0]]), m, n),
        ValueError,
        "targets[0, 1] = 9",
    ),
    (
        "target negative",
        lambda lp, t, m, n: (lp, torch.tensor([[1, -2, 3], [4, 5, 0]]), m, n),
        ValueError,
        "targets[0, 1] = -2",
    ),
    (
        "target is blank",
        lambda lp, t, m, n: (lp, torch.tensor([[1, 0, 3], [4, 5, 0]]), m, n),
        ValueError,
        "blank index 0",
    ),
    ("int log_probs", lambda lp, t, m, n: (lp.long(), t, m, n), TypeError, "floating dtype"),
    ("float targets", lambda lp, t, m, n: (lp, t.float(), m, n), TypeError, "int64 or int32"),
    ("float lengths", lambda lp, t, m, n: (lp, t, m.float(), n), TypeError, "integer dtype"),
]


@pytest.mark.parametrize("fn", [la.ctc_loss, la.axe_loss, la.latent_alignment_loss])
@pytest.mark.parametrize("name,mutate,exc,text", CASES, ids=[c[0] for c in CASES])
def test_bad_input(fn, name, mutate, exc, text):
    with pytest.raises(exc, match="expected") as info:
        fn(*mutate(*good()))
    assert text in str(info.value)


def test_padding_beyond_lengths_is_ignored():
    lp, t, m, n = good()
    t2 = t.clone()
    t2[1, 2] = -100  # beyond target_lengths[1] = 2
    assert la.axe_loss(lp, t2, m, n).item() == la.axe_loss(lp, t, m, n).item()


def test_nan_is_refused():
    lp, t, m, n = good()
    lp[1, 2, 4] = float("nan")
    with pytest.raises(
        ValueError, match="expected log_probs without NaN, found NaN at batch 1, position 2"
    ):
        la.axe_loss(lp, t, m, n)
    logits = torch.randn(2, 5, 6)
    logits[0, 1, 3] = float("nan")  # not a target, but it poisons the log-softmax
    with pytest.raises(ValueError, match="logits without NaN"):
        la.axe_loss(logits, t, m, n, from_logits=True)


@pytest.mark.parametrize(
    "kwargs,text",
    [
        ({"operators": ("align", "copy")}, "unknown ['copy']"),
        ({"operators": ("delimiter",)}, "contain 'align'"),
        ({"operators": "align"}, "collection of operator names"),
        ({"aggregate": "mean"}, "aggregate in"),
        ({"reduction": "avg"}, "reduction in"),
        ({"weights": {"clone_target": 2.0}, "operators": ("align",)}, "weights only for enabled"),
        ({"blank": 6}, "blank < C"),
        ({"backend": "cuda"}, "backend in"),
    ],
)
def test_bad_options(kwargs, text):
    lp, t, m, n = good()
    with pytest.raises(ValueError) as info:
        la.latent_alignment_loss(lp, t, m, n, **kwargs)
    assert text in str(info.value) and "expected" in str(info.value)


def test_unknown_backend_is_refused():
    lp, t, m, n = good()
    with pytest.raises(ValueError, match="expected backend in"):
        la.axe_loss(lp, t, m, n, backend="cuda")


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error():
    # TRITON_INTERPRET must be set before the kernels are imported: a fresh process without it
    code = (
        "import torch, latalign as la\n"
        "lp = torch.zeros(1, 2, 3).log_softmax(-1)\n"
        "try:\n"
        "    la.axe_loss(lp, torch.tensor([[1]]), [2], [1], backend='triton')\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("ValueError: expected"), out
    assert "TRITON_INTERPRET=1" in out or "triton package" in out, out
