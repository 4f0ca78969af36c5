"""What the training step and the decoders make a GPU wait for, counted on the CPU (issue 16).

``count_host_syncs`` (``latalign.align._counting``) counts CPU tensors as device tensors
when no CUDA device is present, so these are the device→host synchronisations a GPU would
see: ``.item()``/``int()``/``bool()`` of a tensor, value-sized ops (``nonzero``, boolean
indexing), ``.tolist()``. The losses run on the ``torch`` backend here (the one of the
device backends that runs on CPU tensors without Triton's interpreter); the optimizer's
step counters live on the host on a GPU too (``torch.optim``), so they are named ``host=``.

- a training update: 0 (ar and nat archs, CE and AXE), and a whole run makes exactly one
  more per log record (the Meter's one read), none in the updates between;
- beam search and greedy decoding: one per step (the stopping test) plus a constant;
- NAT decoding: a constant number per batch, whatever its size.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

import latalign.align.losses as align_losses
import latalign.translate.train as train_module
from latalign.align._counting import count_host_syncs
from latalign.translate.batching import collate
from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.decode import beam_search_hypotheses, greedy_decode
from latalign.translate.model import Transformer
from latalign.translate.nat.decode import decode_batch
from latalign.translate.optim import build_optimizer
from latalign.translate.registry import get_arch
from latalign.translate.train import train, train_step

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS = types.SimpleNamespace(pad_id=0, bos_id=1, eos_id=2, unk_id=3, blank_id=4)
VOCAB = 40
CASES = [("ar", "ce"), ("ar", "axe"), ("nat", "ce"), ("nat", "axe")]
# runs whose loss logs extra stats (the aux CTC term, the glanced positions): the same 0
EXTRA_CASES = [
    ("ar_aux_ctc", "ce", {}),
    ("nat", "ctc", {"glat_ratio": 0.5}),
    ("nat", "ce", {"glat_ratio": 0.5}),
]


@pytest.fixture(autouse=True)
def device_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """The losses' ``torch`` backend on CPU tensors (numba is a host backend)."""
    resolve = align_losses.resolve
    monkeypatch.setattr(
        align_losses, "resolve", lambda b, d: "torch" if b in (None, "auto") else resolve(b, d)
    )


def _batch(size: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(size):
        n, m = torch.randint(2, 7, (2,), generator=gen).tolist()
        src = torch.randint(5, VOCAB, (n,), generator=gen)
        tgt = torch.randint(5, VOCAB, (m,), generator=gen)
        examples.append((i, src, tgt))
    return collate(examples)


def _setup(arch: str, criterion: str, **options):
    cfg = TrainConfig(arch=arch, criterion=criterion, preset="tiny", **options)
    entry = get_arch(arch)
    torch.manual_seed(0)
    model = entry.build(cfg, VOCAB)
    optimizer = build_optimizer(model, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)
    return model, optimizer, entry.make_loss(cfg, TOKENS)


def _host_steps(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [s["step"] for s in optimizer.state.values() if "step" in s]


@pytest.mark.parametrize("arch, criterion, options", [(a, c, {}) for a, c in CASES] + EXTRA_CASES)
def test_an_update_makes_no_host_sync(arch, criterion, options):
    model, optimizer, loss_fn = _setup(arch, criterion, **options)
    train_step(model, optimizer, _batch(seed=1), loss_fn)  # the optimizer makes its state
    batch = _batch()
    with count_host_syncs(host=_host_steps(optimizer)) as counts:
        stats = train_step(model, optimizer, batch, loss_fn, update=1, clip_norm=1.0)
    assert counts.syncs == 0, counts.sync_ops
    assert counts.host_to_device == 0
    assert all(isinstance(v, torch.Tensor) for k, v in stats.items() if k != "nsentences")
    extra = {"ar_aux_ctc": "aux_ctc"}.get(arch, "glanced" if "glat_ratio" in options else "loss")
    assert extra in stats  # the step did what the case is about
    # the counter sees the checks when they are on: the same update with value checks
    with count_host_syncs(host=_host_steps(optimizer)) as checked:
        train_step(model, optimizer, batch, loss_fn, check_values=True)
    assert checked.syncs >= 1


@pytest.mark.parametrize("arch, criterion", CASES)
def test_the_update_is_the_same_as_with_checks(arch, criterion):
    """Checks off change nothing but the syncs: same stats, same parameters after."""
    results = []
    for check in (False, True):
        model, optimizer, loss_fn = _setup(arch, criterion)
        torch.manual_seed(3)
        stats = [
            train_step(model, optimizer, _batch(seed=s), loss_fn, check_values=check)
            for s in range(3)
        ]
        results.append((stats, [p.detach().clone() for p in model.parameters()]))
    (stats_a, params_a), (stats_b, params_b) = results
    for a, b in zip(stats_a, stats_b):
        assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    assert all(torch.equal(p, q) for p, q in zip(params_a, params_b))


def _counted_run(tmp_path: Path, tiny_config, monkeypatch, name: str, **overrides):
    """Syncs of a whole ``train`` run, and of each of its updates (through ``train_step``)."""
    per_update: list[int] = []

    def counted_step(model, optimizer, *args, **kwargs):
        with count_host_syncs(host=_host_steps(optimizer)) as counts:
            stats = train_step(model, optimizer, *args, **kwargs)
        per_update.append(counts.syncs)
        return stats

    monkeypatch.setattr(train_module, "train_step", counted_step)
    cfg = tiny_config(tmp_path / name, max_updates=6, **overrides)
    with count_host_syncs() as counts:
        result = train(cfg, progress=False)
    monkeypatch.setattr(train_module, "train_step", train_step)
    logs = sum(1 for r in result.history if r["kind"] == "train")
    return counts.syncs, per_update, logs, result


@pytest.mark.parametrize("arch, criterion", [("ar", "axe"), ("nat", "ce")])
def test_a_run_reads_once_per_log_record(tmp_path, tiny_config, monkeypatch, arch, criterion):
    kw = dict(arch=arch, criterion=criterion)
    train(tiny_config(tmp_path / "warm", max_updates=1, **kw), progress=False)  # data cached
    totals = {}
    for every in (1, 2, 6):
        total, per_update, logs, result = _counted_run(
            tmp_path, tiny_config, monkeypatch, f"every{every}", log_every=every, **kw
        )
        assert result.step == 6 and logs == 6 // every
        # the first update makes the optimizer's state; every later one makes no sync
        assert per_update[1:] == [0] * 5, per_update
        totals[every] = (total, logs)
    # everything but the log records is the same in the three runs: one sync per record
    base_total, base_logs = totals[6]
    for total, logs in totals.values():
        assert total - base_total == logs - base_logs


def _tiny_transformer(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.preset("tiny", VOCAB)).eval()


def _sources(size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(5, VOCAB, (size, 7), generator=gen)
    src[:, -1] = TOKENS.eos_id
    src[1::2, 5:] = TOKENS.pad_id  # some padding
    src[1::2, 4] = TOKENS.eos_id
    return src


class _StepCounter:
    """Wraps a model's ``decode_step`` to count the steps of a search."""

    def __init__(self, model: Transformer) -> None:
        self.model, self.steps = model, 0
        self.inner = model.decode_step
        model.decode_step = self  # type: ignore[method-assign]

    def __call__(self, *args, **kwargs):
        self.steps += 1
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("search", ["beam", "greedy"])
def test_a_search_makes_one_sync_per_step(search):
    model = _tiny_transformer()
    counter = _StepCounter(model)
    src = _sources(6)
    extra = []
    for max_len_b in (2, 9):  # forced eos at the limit: different numbers of steps
        counter.steps = 0
        with count_host_syncs() as counts:
            if search == "beam":
                beam_search_hypotheses(model, src, beam=3, max_len_a=0.0, max_len_b=max_len_b)
            else:
                greedy_decode(model, src, max_len_a=0.0, max_len_b=max_len_b)
        assert counts.host_to_device == 0
        extra.append(counts.syncs - counter.steps)
    assert counter.steps >= 3  # the longer search took more steps than the constant
    # one sync per step (the stopping test), and a constant beyond: the encoder's empty-source
    # check and padding test, the cache's padding test, the reads of the finished hypotheses
    # (beam: tokens + scores; greedy: tokens)
    assert extra[0] == extra[1] == (5 if search == "beam" else 4)


@pytest.mark.parametrize("criterion", ["ce", "ctc"])
def test_nat_decoding_makes_a_constant_number_per_batch(criterion):
    model, _, _ = _setup("nat", criterion)
    counts_by_size = {}
    for size in (2, 9):
        with count_host_syncs() as counts:
            out = decode_batch(model, _sources(size), length_beam=3)
        assert len(out) == size
        counts_by_size[size] = counts.syncs
    # the encoder's checks (2), the output width (1), the input and mask tests (3), the one
    # read of every output (1)
    assert counts_by_size[2] == counts_by_size[9] == 7
