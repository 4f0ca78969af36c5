"""TrainConfig validation and files, the lr schedule, the training loop's stopping rules and
logs, bf16 autocast."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

import latalign as la
from latalign.translate.batching import collate
from latalign.translate.checkpoint import load_checkpoint
from latalign.translate.config import ModelConfig
from latalign.translate.decode import translate_sentences
from latalign.translate.doubled import double_inputs, doubled_greedy_decode
from latalign.translate.loss import DecoderInputLoss
from latalign.translate.model import Transformer
from latalign.translate.optim import inverse_sqrt_lr
from latalign.translate.registry import ARCHS, Arch, get_arch, register_arch
from latalign.translate.run import load_run
from latalign.translate.runlog import read_log
from latalign.translate.train import TrainConfig, config_differences, train, use_bf16

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ config


def test_defaults_follow_fairseq_iwslt_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.betas, cfg.weight_decay) == (5e-4, (0.9, 0.98), 1e-4)
    assert (cfg.warmup_updates, cfg.warmup_init_lr, cfg.max_tokens) == (4000, 1e-7, 4096)
    assert cfg.clip_norm == 0.0 and cfg.num_workers == 0


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"criterion": "xent"}, "label_smoothed_ce"),
        ({"preset": "huge"}, "tiny"),
        ({"criterion": "ce", "delta": 0.5}, "delta"),
        ({"criterion": "latent", "aggregate": "avg"}, "aggregate"),
        ({"criterion": "latent", "operators": "align,copy"}, "operators"),
        ({"betas": (0.9,)}, "betas"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"lr": -1.0}, "lr"),
        ({"model": {"layers": 3}}, "ModelConfig"),
        ({"num_workers": 2}, "num_workers"),
    ],
)
def test_bad_config_is_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**overrides)


def test_options_and_round_trip(tmp_path):
    cfg = TrainConfig(
        criterion="latent", operators="align, clone_prediction,delimiter", aggregate="max",
        causal=True, model={"dropout": 0.0}, data={"synthetic_size": 50},
    )  # fmt: skip
    assert cfg.operators == ("align", "clone_prediction", "delimiter")
    assert cfg.criterion_options() == {
        "operators": ("align", "clone_prediction", "delimiter"), "aggregate": "max", "causal": True
    }  # fmt: skip
    assert cfg.data.synthetic_size == 50
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert config_differences(cfg.to_dict(), again.to_dict()) == []
    changed = TrainConfig.from_dict({**cfg.to_dict(), "max_updates": 9, "aggregate": "sum"})
    assert config_differences(cfg.to_dict(), changed.to_dict()) == ["aggregate: 'max' -> 'sum'"]


def test_from_toml_with_tables_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'criterion = "axe"\ndelta = 0.5\npreset = "tiny"\n'
        "[data]\nsynthetic_size = 77\n[model]\ndropout = 0.2\n"
    )
    cfg = TrainConfig.from_file(path, max_updates=3, vocab_size=64, model={"heads": 2})
    assert (cfg.criterion, cfg.delta, cfg.max_updates) == ("axe", 0.5, 3)
    assert (cfg.data.synthetic_size, cfg.data.vocab_size) == (77, 64)
    assert cfg.model == {"dropout": 0.2, "heads": 2}
    with pytest.raises(ValueError, match="nonsense"):
        TrainConfig.from_file(path, nonsense=1)


def test_inverse_sqrt_schedule():
    assert inverse_sqrt_lr(0, 5e-4, 4000, 1e-7) == pytest.approx(1e-7)
    assert inverse_sqrt_lr(2000, 5e-4, 4000, 1e-7) == pytest.approx((5e-4 + 1e-7) / 2)
    assert inverse_sqrt_lr(4000, 5e-4, 4000, 1e-7) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(16000, 5e-4, 4000, 1e-7) == pytest.approx(2.5e-4)


# ------------------------------------------------------------------ loop


def test_train_writes_run_dir_logs_and_validates_ce(tmp_path, tiny_config):
    cfg = tiny_config(
        tmp_path / "run", criterion="axe", max_updates=4, validate_every=2, log_every=2
    )
    result = train(cfg, progress=False)
    run = Path(cfg.run_dir)
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    assert (run / "tokenizer" / "spm.model").is_file()
    assert result.last_checkpoint.is_file() and result.best_checkpoint.is_file()
    log = read_log(run / "log.jsonl")
    assert log == result.history
    train_recs = [r for r in log if r["kind"] == "train"]
    valid_recs = [r for r in log if r["kind"] == "valid"]
    assert [r["step"] for r in train_recs] == [2, 4]
    assert [r["step"] for r in valid_recs] == [2, 4]
    for r in train_recs:
        assert {"epoch", "train_loss", "lr", "tokens_per_s", "elapsed"} <= r.keys()
        assert r["tokens_per_s"] > 0 and math.isfinite(r["train_loss"])
    for r in valid_recs:
        # AXE is at most cross entropy sentence by sentence, hence per token too
        assert r["valid_loss"] <= r["valid_ce"] + 1e-6
    assert result.final == valid_recs[-1]
    assert result.best_valid_loss == min(r["valid_loss"] for r in valid_recs)


def test_stops_at_max_epochs(tmp_path, tiny_config):
    result = train(tiny_config(tmp_path / "r", max_epochs=1), progress=False)
    assert result.stop_reason == "max_epochs" and result.epoch == 1
    valid = [r for r in result.history if r["kind"] == "valid"]
    assert [r["reason"] for r in valid] == ["epoch_end"]


def test_early_stopping_on_flat_validation_loss(tmp_path, tiny_config):
    # lr so small that parameters do not move in float32: validation never improves
    cfg = tiny_config(tmp_path / "r", lr=1e-20, warmup_init_lr=0.0, validate_every=1,
               patience=2, max_updates=50)  # fmt: skip
    result = train(cfg, progress=False)
    assert result.stop_reason == "patience"
    assert result.step == 3  # first validation sets the best, two more without improvement


def test_bf16_autocast_trains_with_finite_loss(tmp_path, tiny_config):
    result = train(
        tiny_config(tmp_path / "r", bf16=True, max_updates=2, log_every=1), progress=False
    )
    losses = [r["train_loss"] for r in result.history if r["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(result.final["valid_ce"])


def test_label_smoothed_ce_logs_nll(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path / "r", criterion="label_smoothed_ce", max_updates=1, log_every=1)
    rec = next(r for r in train(cfg, progress=False).history if r["kind"] == "train")
    # nll is logged next to the smoothed loss; they differ unless epsilon = 0
    assert math.isfinite(rec["train_nll_loss"]) and rec["train_nll_loss"] != rec["train_loss"]


def test_shipped_configs_load():
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))
    assert configs, "configs/ lost its example configs"
    for path in configs:
        cfg = TrainConfig.from_file(path, run_dir="unused")
        assert cfg.preset in ("tiny", "small", "paper") and cfg.max_minutes > 0
    cfg = TrainConfig.from_file(configs[0], run_dir="unused", lr=2e-3)  # CLI-style override
    assert cfg.lr == 2e-3 and cfg.model["dropout"] == 0.2


# ------------------------------------------------------------------ one validation, plug-ins


def test_latent_objective_validated_by_the_library_before_any_work(tmp_path, cache):
    with pytest.raises(ValueError, match="align"):
        TrainConfig(criterion="latent", operators="delimiter,clone_target")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "latalign.cli", "train", "--criterion", "latent",
         "--operators", "delimiter,clone_target", "--run-dir", str(run),
         "--cache-dir", str(tmp_path / "fresh-cache")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "align" in proc.stderr and "Traceback" not in proc.stderr
    assert not run.exists() and not (tmp_path / "fresh-cache").exists()  # before any work


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"arch": "transformer"}, "arch"),
        ({"regime": "sideways"}, "regime"),
        ({"regime": "doubled"}, "layout"),  # ce needs position-aligned logits
        ({"criterion": "doubled_ctc"}, "layout"),
        ({"upsample": 2}, "upsample"),  # not an option of ar / teacher_forcing
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
    ],
)
def test_arch_regime_criterion_checked_in_one_place(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**overrides)


def test_bf16_auto_is_off_on_the_cpu():
    assert TrainConfig().bf16 is None
    cpu = torch.device("cpu")
    assert not use_bf16(TrainConfig(), cpu)
    assert use_bf16(TrainConfig(bf16=True), cpu) and not use_bf16(TrainConfig(bf16=False), cpu)


def test_one_config_reader(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"model": {"preset": "tiny", "vocab_size": 50}}))
    assert ModelConfig.from_file(path).vocab_size == 50  # the same reader as TrainConfig
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1\n")
    for load in (TrainConfig.from_file, ModelConfig.from_file):
        with pytest.raises(ValueError, match="bad.toml"):
            load(bad)


class _WithAux:
    """A LossFn around the ar loss that reports one extra stat (0.5 per target token)."""

    def __init__(self, cfg, tokenizer):
        self.inner = DecoderInputLoss.from_config(cfg, tokenizer)

    def __call__(self, model, batch, *, update):
        loss, stats = self.inner(model, batch, update=update)
        return loss, {**stats, "aux": 0.5 * stats["ntokens"]}


def test_a_plugged_in_arch_trains_through_the_one_loop(tmp_path, tiny_config):
    ar = get_arch("ar")
    if "test_aux" not in ARCHS:
        register_arch(
            Arch(
                "test_aux",
                model=ar.model,
                config=ar.config,
                config_of=ar.config_of,
                make_loss=_WithAux,
                decoder=ar.decoder,
                help="test",
            )  # fmt: skip
        )
    cfg = tiny_config(tmp_path / "r", arch="test_aux", max_updates=2, log_every=1)
    result = train(cfg, progress=False)
    train_recs = [r for r in result.history if r["kind"] == "train"]
    assert [r["train_aux"] for r in train_recs] == [0.5, 0.5]
    assert result.final["valid_aux"] == 0.5 and "valid_ce" in result.final
    assert load_checkpoint(result.last_checkpoint)["train_config"]["arch"] == "test_aux"
    run = load_run(tmp_path / "r")
    assert isinstance(run.model, Transformer) and run.arch.name == "test_aux"


def test_doubled_ctc_trains_and_decodes_through_the_stack(tmp_path, tiny_config):
    cfg = tiny_config(
        tmp_path / "r", regime="doubled", criterion="doubled_ctc", max_updates=3, log_every=1
    )
    result = train(cfg, progress=False)
    assert result.step == 3 and "valid_ce" not in result.final  # logits are 2T long
    assert all(math.isfinite(r["train_loss"]) for r in result.history if r["kind"] == "train")
    # the loss is real CTC with m = 2L over the doubled input
    run = load_run(tmp_path / "r")
    model, tok = run.model, run.tokenizer
    batch = collate([(0, torch.tensor([7, 8, 9]), torch.tensor([10, 11]))])
    with torch.no_grad():
        logits = model(batch.src_tokens, batch.src_lengths, double_inputs(batch.prev_output_tokens))
        loss, stats = DecoderInputLoss.from_config(cfg, tok)(model, batch, update=None)
    assert logits.shape[1] == 2 * batch.target.shape[1]
    expected = la.ctc_loss(
        logits.log_softmax(-1), batch.target, 2 * batch.target_lengths, batch.target_lengths,
        blank=tok.blank_id, reduction="sum",
    )  # fmt: skip
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert stats["ntokens"] == 3
    # decoding: the stack's batching with the doubled greedy decoder
    decode = partial(doubled_greedy_decode, blank_id=tok.blank_id)
    hyps = translate_sentences(model, tok, ["a b", "c d e", "f"], decode_batch=decode)
    assert len(hyps) == 3 and all(isinstance(h, str) for h in hyps)


def test_reproduce_passes_the_device_to_its_training(tmp_path):
    from latalign.reproduce.cli import command_line
    from latalign.reproduce.context import train_config
    from latalign.reproduce.presets import ReproduceOptions
    from latalign.reproduce.run import context_of, validate_options

    options = ReproduceOptions(out=tmp_path, preset="ci", device="cpu")
    validate_options(options)
    ctx = context_of(options)
    assert train_config(ctx, tmp_path / "r", "ce", {}, 1).device == "cpu"
    assert "--device cpu" in command_line(options)
    with pytest.raises(ValueError, match="device"):
        validate_options(ReproduceOptions(out=tmp_path, preset="ci", device="gpu"))
