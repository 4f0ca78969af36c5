"""What a loss call makes a GPU wait for, counted on the CPU (issue 16, items 2, 3 and 5).

``count_host_syncs`` (``latalign.align._counting``) counts, through a TorchDispatchMode,
the ops that synchronise the host with a device, host→device copies and launches (torch
ops + Triton launches reported by the launcher). Without CUDA it counts CPU tensors as
device tensors, so these are the counts a GPU would see for the backends that run there
(torch, and triton through its interpreter). docs/gpu.md quotes the launch counts.
"""

from __future__ import annotations

import pytest
import torch
from conftest import HAS_TRITON

import latalign as la
from latalign.align._counting import count_host_syncs

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # interpreter lanes

DEVICE_BACKENDS = ["torch", *(["triton"] if HAS_TRITON else [])]

LOSSES = {
    "axe": lambda x, t, m, n, **k: la.axe_loss(x, t, m, n, **k),
    "causal_axe": lambda x, t, m, n, **k: la.axe_loss(x, t, m, n, causal=True, **k),
    "ctc": lambda x, t, m, n, **k: la.ctc_loss(x, t, m, n, zero_infinity=True, **k),
    "latent_sum": lambda x, t, m, n, **k: la.latent_alignment_loss(x, t, m, n, **k),
}
# Triton launches per call from logits, forward + backward: emissions, the DP's forward (max:
# with its backtracking tail), its backward (sum: beta + posteriors), the logits' gradient
TRITON_LAUNCHES = {"axe": 4, "causal_axe": 4, "ctc": 4, "latent_sum": 5}
# every launch (torch ops + Triton) per AXE/CTC call from logits on triton, fwd + bwd, with
# validation and without; docs/gpu.md states them
ALL_LAUNCHES = {("axe", True): 35, ("axe", False): 22, ("ctc", True): 38, ("ctc", False): 25}


def _inputs(nb=3, tmax=6, ncls=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(nb, tmax, ncls, generator=gen).requires_grad_()
    targets = 1 + (torch.arange(tmax) % 5).repeat(nb, 1)  # no equal neighbours: CTC feasible
    lengths = torch.tensor([6, 5, 4][:nb])
    return logits, targets, lengths


def _counted(loss, backend, validate, from_logits=True):
    logits, targets, lengths = _inputs()
    src = logits if from_logits else logits.log_softmax(-1).detach().requires_grad_()
    kw = dict(from_logits=from_logits, backend=backend, validate=validate)
    LOSSES[loss](src, targets, lengths, lengths, **kw).backward()  # warm: constants cached
    src.grad = None
    with count_host_syncs() as counts:
        LOSSES[loss](src, targets, lengths, lengths, **kw).backward()
    return counts


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_one_sync_with_validation_none_without(backend, loss, validate):
    counts = _counted(loss, backend, validate)
    assert counts.syncs == (1 if validate else 0), counts.sync_ops
    assert counts.host_to_device == 0  # constant tables are copied once per device


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_from_log_probs_too(backend):
    assert _counted("axe", backend, True, from_logits=False).syncs == 1
    assert _counted("ctc", backend, False, from_logits=False).syncs == 0


def test_the_global_switch_turns_validation_off():
    before = la.set_validation(False)
    try:
        assert not la.validation_enabled()
        assert _counted("axe", "torch", None).syncs == 0
    finally:
        la.set_validation(before)
    assert _counted("axe", "torch", None).syncs == 1


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (interpreted on the CPU)")
@pytest.mark.parametrize("loss", LOSSES)
def test_triton_launches_per_call(loss):
    counts = _counted(loss, "triton", True)
    assert counts.triton_launches == TRITON_LAUNCHES[loss], dict(counts.ops)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (interpreted on the CPU)")
@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("loss", ["axe", "ctc"])
def test_all_launches_per_call(loss, validate):
    # a regression (a new small op in the hot path) fails here; update docs/gpu.md with it
    counts = _counted(loss, "triton", validate)
    assert counts.launches <= ALL_LAUNCHES[loss, validate], dict(counts.ops)


def test_counter_sees_what_it_claims():
    x = torch.randn(5)
    with count_host_syncs(cpu_as_device=True) as counts:
        bool(x.sum() > 0)  # sum, gt: 2 launches; bool(): 1 sync
        x[x > 0]  # gt + boolean-mask index: a sync (nonzero inside)
        torch.tensor([1, 2])  # from host data: a host->device copy
        x.view(5, 1).expand(5, 2)  # views: nothing
        torch.empty(3)  # no fill: nothing
    assert counts.syncs == 2 and counts.host_to_device == 1
    assert counts.launches == 4 and counts.ops["gt"] == 2
    with count_host_syncs(cpu_as_device=False) as counts:
        bool(x.sum() > 0)  # a CPU tensor really on the CPU: no sync
    assert counts.syncs == 0


def test_validation_off_still_reads_nothing_out_of_bounds():
    logits, targets, lengths = _inputs()
    bad_targets = targets.clone()
    bad_targets[0, 0] = 10**6  # an id beyond the vocabulary
    for backend in ["numba", *DEVICE_BACKENDS]:
        loss = la.axe_loss(
            logits, bad_targets, lengths + 9, lengths, backend=backend, validate=False
        )
        assert loss.shape == ()  # no crash: lengths clamped, ids replaced, result unchecked
        with pytest.raises(ValueError, match="input_lengths"):
            la.axe_loss(logits, bad_targets, lengths + 9, lengths, backend=backend)


def test_every_launch_runs_under_the_tensors_device(monkeypatch):
    # the launcher enters torch.cuda.device(<the tensors' device>), whatever the current one
    if not HAS_TRITON:
        pytest.skip("needs triton")
    from latalign.align.backends import triton_module

    tk = triton_module()
    entered = []

    class Guard:
        def __init__(self, device):
            entered.append(device)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def _fake_kernel():
        pass

    class Kernel:
        fn = staticmethod(_fake_kernel)

        def __getitem__(self, grid):
            return lambda *args, **kwargs: entered.append(("ran", grid))

    monkeypatch.setattr(torch.cuda, "device", Guard)
    dev = torch.device("cuda", 1)
    with count_host_syncs() as counts:
        tk._launch(Kernel(), (3,), dev, 1, 2)
    assert entered == [dev, ("ran", (3,))]
    assert counts.triton_launches == 1 and counts.ops["_fake_kernel"] == 1
