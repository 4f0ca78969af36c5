"""Decoder-input regimes (translate/regimes.py): each transform against an oracle; the
positive control (translate/aux_ctc.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from latalign.translate.aux_ctc import AuxCTCLoss, AuxCTCModelConfig, AuxCTCTransformer
from latalign.translate.batching import collate
from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.decode import beam_search, greedy_decode
from latalign.translate.model import Transformer
from latalign.translate.regimes import (
    SCHEDULES,
    DelayedInputModel,
    corrupt_inputs,
    delayed_inputs,
    free_running_inputs,
    mix_inputs,
    sampling_probability,
    scheduled_sampling_inputs,
    teacher_forced_predictions,
)
from latalign.translate.registry import get_regime

PAD, BOS, EOS, UNK, BLANK = 0, 1, 2, 3, 4
VOCAB = 30
TOKENIZER = SimpleNamespace(pad_id=PAD, bos_id=BOS, eos_id=EOS, blank_id=BLANK)


def decoder_input(**fields):
    """The registered regime of ``TrainConfig(**fields)`` (what training feeds)."""
    cfg = TrainConfig(**fields)
    return get_regime(cfg.regime).make(cfg, TOKENIZER)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        s = int(torch.randint(2, 7, (1,), generator=g))
        t = int(torch.randint(1, 9, (1,), generator=g))
        src = torch.randint(5, VOCAB, (s,), generator=g)
        tgt = torch.randint(5, VOCAB, (t,), generator=g)
        examples.append((i, src, tgt))
    return collate(examples, PAD, BOS, EOS)


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(3)
    cfg = ModelConfig.preset(
        "tiny", VOCAB, dropout=0.1, encoder_layers=1, decoder_layers=2, d_model=32, ffn_dim=64
    )
    m = Transformer(cfg)
    m.train()
    return m


def _targets(batch) -> list[list[int]]:
    return [batch.target[b, : int(batch.target_lengths[b])].tolist() for b in range(len(batch.ids))]


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("top", [0.0, 0.25, 1.0])
def test_schedules_are_monotone_and_hit_their_endpoints(schedule, top):
    ramp = 200
    qs = [sampling_probability(schedule, t, top, ramp) for t in range(0, 2 * ramp)]
    assert all(b >= a - 1e-12 for a, b in zip(qs, qs[1:]))
    assert all(0.0 <= q <= top + 1e-12 for q in qs)
    assert qs[ramp] == pytest.approx(top, abs=1e-12) and qs[-1] == pytest.approx(top, abs=1e-12)
    if schedule == "constant":
        assert qs[0] == top
    else:
        assert qs[0] == 0.0
        if top > 0:  # strictly inside the ramp: neither endpoint
            assert 0.0 < qs[ramp // 2] < top


def test_linear_schedule_is_linear_and_inverse_sigmoid_is_sigmoid_shaped():
    assert sampling_probability("linear", 50, 0.8, 200) == pytest.approx(0.2)
    q = [sampling_probability("inverse_sigmoid", t, 1.0, 1000) for t in (100, 500, 900)]
    # slow start, steep middle, slow end: the middle lies near 1/2, the ends near 0 and 1
    assert q[0] < 0.2 and 0.25 < q[1] < 0.75 and q[2] > 0.8


# --------------------------------------------------------------------------- scheduled sampling


def test_sampling_probability_zero_equals_teacher_forcing_exactly(model):
    batch = _batch(1)
    for q in (0.0,):
        out = scheduled_sampling_inputs(model, batch, q)
        assert torch.equal(out, batch.prev_output_tokens)
    regime = decoder_input(regime="scheduled_sampling", regime_p=0.0, schedule="constant")
    out = regime(model, batch, update=10)
    assert torch.equal(out, batch.prev_output_tokens)
    # linear ramp at update 0 feeds no prediction either
    regime = decoder_input(regime="scheduled_sampling", regime_p=1.0, schedule="linear")
    assert torch.equal(regime(model, batch, update=0), batch.prev_output_tokens)
    assert not torch.equal(regime(model, batch, update=2000), batch.prev_output_tokens)


def test_sampling_probability_one_feeds_every_position_the_models_prediction(model):
    batch = _batch(2)
    out = scheduled_sampling_inputs(model, batch, 1.0)
    assert model.training  # the first pass ran in eval mode and restored the mode
    model.eval()
    with torch.no_grad():
        logits = model(batch.src_tokens, batch.src_lengths, batch.prev_output_tokens)
    model.train()
    logits[..., PAD] = -math.inf
    logits[..., BOS] = -math.inf
    pred = logits.argmax(-1)
    for b, L in enumerate(batch.target_lengths.tolist()):
        assert out[b, 0] == BOS
        assert out[b, 1:L].tolist() == pred[b, : L - 1].tolist()
        assert (out[b, L:] == PAD).all()
    # and the predictions differ from gold somewhere (else the test proves nothing)
    assert not torch.equal(out, batch.prev_output_tokens)


def test_mix_inputs_takes_a_q_share_of_predictions():
    prev = torch.full((200, 40), 9)
    prev[:, 0] = BOS
    pred = torch.full((200, 40), 11)
    g = torch.Generator().manual_seed(0)
    out = mix_inputs(prev, pred, 0.3, generator=g)
    share = float((out[:, 1:] == 11).float().mean())
    assert abs(share - 0.3) < 0.02  # 7800 Bernoulli(0.3) draws: sd ≈ 0.005
    assert (out[:, 0] == BOS).all()


def test_teacher_forced_predictions_shape(model):
    batch = _batch(3)
    pred = teacher_forced_predictions(model, batch)
    assert pred.shape == batch.target.shape
    assert not ((pred == PAD) | (pred == BOS)).any()


# --------------------------------------------------------------------------- free running


def test_free_running_inputs_equal_greedy_decodings_prefixes(model):
    batch = _batch(4, n=8)
    inputs = free_running_inputs(model, batch)
    greedy = greedy_decode(
        model, batch.src_tokens, batch.src_lengths, min_len=0, max_len_a=0, max_len_b=50
    )
    compared = 0
    for b, L in enumerate(batch.target_lengths.tolist()):
        expect = [BOS, *greedy[b], EOS][:L]  # greedy stops at its eos; free running goes on
        assert inputs[b, : len(expect)].tolist() == expect
        assert (inputs[b, L:] == PAD).all()
        compared += len(expect) - 1
    assert compared >= 15


def test_free_running_second_pass_sees_what_generation_saw(model):
    batch = _batch(5)
    inputs = free_running_inputs(model, batch)
    model.eval()
    with torch.no_grad():
        logits = model(batch.src_tokens, batch.src_lengths, inputs)
    model.train()
    logits[..., PAD] = -math.inf
    logits[..., BOS] = -math.inf
    pred = logits.argmax(-1)
    for b, L in enumerate(batch.target_lengths.tolist()):
        assert inputs[b, 1:L].tolist() == pred[b, : L - 1].tolist()


def test_free_running_sampling_is_seeded_and_low_temperature_is_greedy(model):
    batch = _batch(6)
    a = free_running_inputs(
        model, batch, temperature=1.0, generator=torch.Generator().manual_seed(1)
    )
    b = free_running_inputs(
        model, batch, temperature=1.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, b)
    greedy = free_running_inputs(model, batch)
    cold = free_running_inputs(model, batch, temperature=1e-6)
    assert torch.equal(cold, greedy)
    hot = free_running_inputs(
        model, batch, temperature=5.0, generator=torch.Generator().manual_seed(2)
    )
    assert not torch.equal(hot, greedy)


# --------------------------------------------------------------------------- corruption


def test_corruption_zero_is_identity_and_one_masks_every_non_bos_position():
    batch = _batch(7)
    prev = batch.prev_output_tokens
    assert torch.equal(corrupt_inputs(prev, 0.0), prev)
    full = corrupt_inputs(prev, 1.0, mask_id=UNK)
    real = prev.ne(PAD)
    assert (full[:, 0] == BOS).all()
    assert (full[:, 1:][real[:, 1:]] == UNK).all()
    assert (full[~real] == PAD).all()


def test_corruption_rate_and_only_masks():
    prev = torch.randint(5, VOCAB, (100, 50))
    prev[:, 0] = BOS
    prev[:, 40:] = PAD
    out = corrupt_inputs(prev, 0.3, mask_id=UNK, generator=torch.Generator().manual_seed(0))
    changed = out.ne(prev)
    assert (out[changed] == UNK).all()
    assert not changed[:, 0].any() and not changed[:, 40:].any()
    assert abs(float(changed[:, 1:40].float().mean()) - 0.3) < 0.03  # 3900 draws, sd ≈ 0.007


# --------------------------------------------------------------------------- delayed


@pytest.mark.parametrize("k", [1, 2, 3, 12])
def test_delay_k_feeds_the_target_shifted_by_k(k):
    batch = _batch(8)
    out = delayed_inputs(batch.prev_output_tokens, k)
    for b, y in enumerate(_targets(batch)):
        L = len(y)
        # position j (1-based) is fed y_{j-k}; y_0 and earlier are bos
        expect = [y[j - k - 1] if j - k >= 1 else BOS for j in range(1, L + 1)]
        assert out[b, :L].tolist() == expect
        assert (out[b, L:] == PAD).all()
    if k == 1:
        assert torch.equal(out, batch.prev_output_tokens)


def test_delayed_decoding_feeds_the_model_its_training_input(model):
    batch = _batch(9)
    wrapped = DelayedInputModel(model, 2)
    hyps = greedy_decode(wrapped, batch.src_tokens, batch.src_lengths)
    assert model.training  # decoding restored train mode through the wrapper
    model.eval()
    for b, h in enumerate(hyps):
        seq = torch.tensor([[BOS, *h]])
        with torch.no_grad():  # uncached oracle: the inner model fed y_{j-2} in one pass
            logits = model(batch.src_tokens[b : b + 1], None, delayed_inputs(seq, 2))
        logits[..., PAD] = -math.inf
        logits[..., BOS] = -math.inf
        assert logits.argmax(-1)[0, : len(h)].tolist() == h
    model.train()
    assert beam_search(wrapped, batch.src_tokens, batch.src_lengths, beam=1) == hyps


def test_validation_inputs_mirror_inference(model):
    batch = _batch(10)
    prev = batch.prev_output_tokens
    delayed = decoder_input(regime="delayed", delay=3)(model, batch, update=None)
    assert torch.equal(delayed, delayed_inputs(prev, 3))
    for name in ("teacher_forcing", "scheduled_sampling", "free_running", "corruption"):
        assert torch.equal(decoder_input(regime=name)(model, batch, update=None), prev)


# --------------------------------------------------------------------------- positive control


def _ce(logits, batch):
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), batch.target.reshape(-1), ignore_index=PAD,
        reduction="sum",
    )  # fmt: skip


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_positive_control_loss_is_ce_plus_weighted_ctc(weight):
    from latalign.translate.regimes import teacher_forcing
    from latalign.translate.registry import get_criterion

    torch.manual_seed(0)
    cfg = AuxCTCModelConfig.preset("tiny", VOCAB, aux_upsample=2, dropout=0.0, d_model=32,
                                   ffn_dim=64, encoder_layers=1, decoder_layers=1)  # fmt: skip
    model = AuxCTCTransformer(cfg)
    head = model.aux_head
    batch = _batch(11)
    loss_fn = AuxCTCLoss(teacher_forcing, get_criterion("ce"), {}, blank_id=BLANK, weight=weight)
    loss, stats = loss_fn(model, batch, update=0)
    with torch.no_grad():
        dec = model(batch.src_tokens, batch.src_lengths, batch.prev_output_tokens)
        enc = model.encode(batch.src_tokens, batch.src_lengths)
        # the head by hand: state i -> u rows, ReLU, LayerNorm, vocabulary projection
        b, s, c = enc.out.shape
        up = (enc.out @ head.expand.weight.T + head.expand.bias).view(b, 2 * s, c)
        lp = F.log_softmax(head.out(head.norm(F.relu(up))), dim=-1)
        lengths = batch.src_lengths * 2
        # torch's own CTC as the oracle (time-major log-probs)
        ctc = F.ctc_loss(lp.transpose(0, 1), batch.target, lengths, batch.target_lengths,
                         blank=BLANK, reduction="sum", zero_infinity=True)  # fmt: skip
    expect = float(_ce(dec, batch) + weight * ctc)
    assert float(loss.detach()) == pytest.approx(expect, rel=1e-5)
    assert stats["aux_ctc"] == pytest.approx(float(ctc), rel=1e-5)
    assert float(ctc) > 0
    loss.backward()  # the decoder always, the head only when weighted
    assert model.decoder_embed.weight.grad is not None
    if weight > 0:
        assert head.out.weight.grad is not None and head.out.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(regime="teacher_force"), "expected a regime"),
        (dict(regime="scheduled_sampling", schedule="exponential"), "expected a schedule"),
        (dict(regime="scheduled_sampling", regime_p=1.5), "expected regime_p in [0, 1]"),
        (dict(regime="scheduled_sampling", regime_p=-0.1), "expected regime_p in [0, 1]"),
        (dict(regime="corruption", regime_p=2.0), "expected regime_p in [0, 1]"),
        (dict(regime="delayed", delay=0), "expected delay k >= 1"),
        (dict(regime="scheduled_sampling", schedule_updates=0), "schedule_updates >= 1"),
        (dict(regime="free_running", temperature=-1.0), "expected temperature >= 0"),
        (dict(arch="ar_aux_ctc", aux_ctc_weight=-1.0), "expected aux_ctc_weight >= 0"),
        (dict(arch="ar_aux_ctc", upsample=0), "expected upsample >= 1"),
        (dict(regime="ctc_control"), "expected a regime"),  # an arch now: ar_aux_ctc
    ],
)
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(**kwargs)


def test_regime_options_default_where_they_are_declared():
    cfg = TrainConfig(regime="scheduled_sampling")
    assert (cfg.option("schedule"), cfg.option("schedule_updates"), cfg.option("regime_p")) == (
        "linear", 1000, 0.5
    )  # fmt: skip
    assert TrainConfig(regime="corruption").option("regime_p") == 0.1
    assert TrainConfig(regime="delayed", delay=3).option("delay") == 3
    with pytest.raises(ValueError, match="expected an option of arch 'ar'"):
        TrainConfig().option("delay")


def test_pure_functions_reject_bad_arguments():
    prev = torch.tensor([[BOS, 5, 6]])
    with pytest.raises(ValueError, match="delay"):
        delayed_inputs(prev, 0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        corrupt_inputs(prev, 1.1)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        mix_inputs(prev, prev, -0.5)
    with pytest.raises(ValueError, match="schedule"):
        sampling_probability("cosine", 0, 0.5, 10)


# --------------------------------------------------------------------------- the one train()


def test_train_config_validates_regime_options(tmp_path, tiny_config):
    with pytest.raises(ValueError, match="regime_p|sample_prob"):
        tiny_config(tmp_path, regime="scheduled_sampling", regime_p=1.5)
    with pytest.raises(ValueError, match=r"expected regime_p in \[0, 1\]; found -0.2"):
        tiny_config(tmp_path, regime="corruption", regime_p=-0.2)
    with pytest.raises(ValueError, match="expected schedule_updates >= 1"):
        tiny_config(tmp_path, regime="scheduled_sampling", schedule_updates=0)
    with pytest.raises(ValueError, match="schedule"):
        tiny_config(tmp_path, regime="scheduled_sampling", schedule="cosine")
    with pytest.raises(ValueError, match="delay k >= 1"):
        tiny_config(tmp_path, regime="delayed", delay=0)
    with pytest.raises(ValueError, match="expected options"):  # an option the regime ignores
        tiny_config(tmp_path, regime="corruption", delay=2)
    with pytest.raises(ValueError, match="expected aux_ctc_weight >= 0"):
        tiny_config(tmp_path, arch="ar_aux_ctc", aux_ctc_weight=-1.0)


def test_a_regime_the_arch_cannot_use_is_refused(tmp_path, tiny_config):
    from latalign.translate.registry import ARCHS, Arch, get_arch, register_arch

    ar = get_arch("ar")
    register_arch(Arch(name="probe_nat", model=ar.model, config=ar.config, config_of=ar.config_of,
                       make_loss=ar.make_loss, decoder=ar.decoder,
                       regimes=frozenset({"teacher_forcing"})))  # fmt: skip
    try:
        tiny_config(tmp_path, arch="probe_nat")
        for regime in ("scheduled_sampling", "free_running", "corruption", "delayed"):
            with pytest.raises(ValueError, match="expected a regime of arch 'probe_nat'"):
                tiny_config(tmp_path, arch="probe_nat", regime=regime)
    finally:
        ARCHS.pop("probe_nat")


def test_degenerate_settings_train_exactly_like_teacher_forcing(tmp_path, tiny_config, one_thread):
    from latalign.translate.train import train

    base = train(tiny_config(tmp_path / "tf", max_updates=3), progress=False).final
    for name, kw in {
        "ss0": dict(regime="scheduled_sampling", regime_p=0.0, schedule="constant"),
        "delay1": dict(regime="delayed", delay=1),
        "corrupt0": dict(regime="corruption", regime_p=0.0),
    }.items():
        run = train(tiny_config(tmp_path / name, max_updates=3, **kw), progress=False).final
        assert run["valid_loss"] == base["valid_loss"], name
        assert run["valid_ce"] == base["valid_ce"], name


@pytest.mark.parametrize(
    "kw",
    [
        dict(regime="scheduled_sampling", regime_p=1.0, schedule="linear", schedule_updates=2),
        dict(regime="free_running", temperature=0.5),
        dict(regime="corruption", regime_p=0.5, criterion="axe"),
        dict(regime="delayed", delay=2, criterion="causal_axe"),
        dict(arch="ar_aux_ctc", aux_ctc_weight=0.5, upsample=2, criterion="axe"),
    ],
)
def test_each_regime_trains_and_decodes(tmp_path, tiny_config, one_thread, kw):
    from latalign.translate.decode import SearchOptions
    from latalign.translate.run import load_run
    from latalign.translate.train import train

    res = train(tiny_config(tmp_path / "run", max_updates=3, log_every=1, **kw), progress=False)
    assert res.step == 3 and math.isfinite(res.final["valid_loss"])
    assert math.isfinite(res.final["valid_ce"])
    if "arch" in kw:  # the auxiliary CTC is logged next to the loss
        assert all(r["train_aux_ctc"] > 0 for r in res.history if r["kind"] == "train")
    run = load_run(res.run_dir)
    if "arch" in kw:
        assert isinstance(run.model, AuxCTCTransformer) and run.model.aux_head.upsample == 2
        assert any(k.startswith("aux_head.") for k in run.model.state_dict())
    out = run.translate(["a b c", "d e"], SearchOptions(beam=2, device="cpu"))
    assert len(out) == 2


def test_init_from_loads_every_weight_and_keeps_new_heads(tmp_path, tiny_config, one_thread):
    from latalign.translate.checkpoint import checkpoint_paths, load_checkpoint
    from latalign.translate.train import SetupError, init_weights, train

    res = train(tiny_config(tmp_path / "base", max_updates=2), progress=False)
    ckpt = checkpoint_paths(res.run_dir)[0]
    saved = load_checkpoint(ckpt)
    fp = saved["tokenizer"]
    cfg = AuxCTCModelConfig(**{**saved["model_config"], "aux_upsample": 2})
    model = AuxCTCTransformer(cfg)
    head_before = {k: v.clone() for k, v in model.aux_head.state_dict().items()}
    init_weights(model, ckpt, fp)
    state = model.state_dict()
    for k, v in saved["model"].items():
        assert torch.equal(state[k], v), k
    for k, v in model.aux_head.state_dict().items():
        assert torch.equal(v, head_before[k])  # the new head keeps its initialisation
    with pytest.raises(SetupError, match="tokenizer"):
        init_weights(model, ckpt, "0" * 40)
    with pytest.raises(SetupError, match="expected a checkpoint to initialise from"):
        train(tiny_config(tmp_path / "x", init_from=str(tmp_path / "missing.pt")))
    assert not (tmp_path / "x").exists()  # refused before any file is written
    # a fine-tuning run starts from those weights: one update at a tiny learning rate
    tuned = train(
        tiny_config(
            tmp_path / "tuned", max_updates=1, init_from=str(ckpt), lr=1e-9, warmup_init_lr=1e-9
        ),  # fmt: skip
        progress=False,
    )
    assert tuned.final["valid_loss"] == pytest.approx(res.final["valid_loss"], rel=1e-3)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--regime", "corruption", "--regime-p", "1.5"], "expected regime_p in [0, 1]"),
        (["--regime", "delayed", "--delay", "0"], "expected delay k >= 1"),
        (["--regime", "scheduled_sampling", "--schedule", "cosine"], "expected a schedule"),
        (["--regime", "free_running", "--temperature", "-1"], "expected temperature >= 0"),
    ],
)
def test_cli_refuses_bad_regime_options_with_status_2(tmp_path, capsys, flags, message):
    from latalign.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), "--preset", "tiny", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run_dir.exists()  # before any work
