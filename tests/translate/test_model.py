"""Tests for the translation transformer and its config."""

from __future__ import annotations

import pytest
import torch

from latalign.translate.config import ModelConfig
from latalign.translate.model import Transformer, sinusoidal_table

PAD, BOS, EOS = 0, 1, 2
VOCAB = 40


def make_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.preset("tiny", VOCAB, **overrides)).eval()


def random_batch(seed: int = 1, bsz: int = 3, src_len: int = 7, tgt_len: int = 6):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, VOCAB, (bsz, src_len), generator=g)
    src[1, src_len - 2 :] = PAD  # one padded source
    lengths = src.ne(PAD).sum(1)
    prev = torch.randint(5, VOCAB, (bsz, tgt_len), generator=g)
    prev[:, 0] = BOS
    return src, lengths, prev


def expected_params(cfg: ModelConfig) -> int:
    """Closed-form parameter count of the architecture (tied matrices counted once)."""
    d, f, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    attn = 4 * d * d + 4 * d
    ffn = d * f + f + f * d + d
    ln = 2 * d
    enc_layer = attn + ffn + 2 * ln
    dec_layer = 2 * attn + ffn + 3 * ln
    n_embed = 1 + (not cfg.share_all_embeddings) + (not cfg.share_decoder_input_output_embed)
    final_ln = 2 * ln if cfg.normalize_before else 0
    return (
        cfg.encoder_layers * enc_layer + cfg.decoder_layers * dec_layer + n_embed * v * d + final_ln
    )


# --------------------------------------------------------------------------- config


def test_presets_match_the_paper_and_fairseq():
    paper = ModelConfig.preset("paper", 9000)
    assert (paper.encoder_layers, paper.decoder_layers, paper.d_model) == (6, 6, 512)
    assert (paper.ffn_dim, paper.heads, paper.dropout) == (1024, 4, 0.3)
    assert paper.share_decoder_input_output_embed and not paper.share_all_embeddings
    assert not paper.normalize_before
    small = ModelConfig.preset("small", 9000)
    assert (small.encoder_layers, small.d_model, small.ffn_dim) == (3, 256, 1024)
    assert small.share_all_embeddings


@pytest.mark.parametrize(
    "field, value",
    [("d_model", 63), ("heads", 3), ("dropout", 1.0), ("vocab_size", 0), ("pad_id", 99)],
)
def test_config_validation(field, value):
    kwargs = dict(vocab_size=50, d_model=64, heads=4)
    kwargs[field] = value
    with pytest.raises(ValueError, match="expected"):
        ModelConfig(**kwargs)


def test_unknown_preset_and_keys_raise():
    with pytest.raises(ValueError, match="expected a preset"):
        ModelConfig.preset("huge", 100)
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({"vocab_size": 10, "layers": 3})


def test_config_file_roundtrip(tmp_path):
    path = tmp_path / "model.toml"
    path.write_text('[model]\npreset = "tiny"\nvocab_size = 123\ntie_output = false\n')
    cfg = ModelConfig.from_file(path)
    assert cfg.vocab_size == 123 and cfg.d_model == ModelConfig.preset("tiny", 1).d_model
    assert not cfg.share_decoder_input_output_embed
    assert ModelConfig(**cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="expected a .toml"):
        ModelConfig.from_file(tmp_path / "model.json")


def test_yaml_needs_pyyaml_or_works(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("vocab_size: 77\npreset: tiny\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pyyaml"):
            ModelConfig.from_file(path)
    else:
        assert ModelConfig.from_file(path).vocab_size == 77


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("preset", ["paper", "small", "tiny"])
@pytest.mark.parametrize("tie_output", [True, False])
def test_tying_and_parameter_counts(preset, tie_output):
    cfg = ModelConfig.preset(preset, 9000, tie_output=tie_output)
    with torch.device("meta"):  # no memory, no init cost
        model = Transformer(cfg)
    out_w = model.output_projection.weight
    assert (out_w is model.decoder_embed.weight) == tie_output
    assert (model.encoder_embed.weight is model.decoder_embed.weight) == cfg.share_all_embeddings
    assert model.num_parameters() == expected_params(cfg)
    if preset == "paper" and tie_output:
        # fairseq transformer_iwslt_de_en with a joint 9k vocabulary (separate encoder embedding)
        assert 38_000_000 < model.num_parameters() < 42_000_000


def test_paper_param_range_over_vocab_sizes():
    for vocab in (8000, 10000):
        n = expected_params(ModelConfig.preset("paper", vocab))
        assert 36_000_000 < n < 42_000_000, n


def test_tied_weights_share_gradient_updates():
    model = make_model(tie_output=True).train()
    src, lengths, prev = random_batch()
    model(src, lengths, prev).sum().backward()
    grad = model.decoder_embed.weight.grad
    assert grad is not None and grad is model.output_projection.weight.grad


# --------------------------------------------------------------------------- behaviour


def test_forward_shapes_and_dtype():
    model = make_model()
    src, lengths, prev = random_batch()
    logits = model(src, lengths, prev)
    assert logits.shape == (3, 6, VOCAB) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_sinusoidal_table_layout():
    table = sinusoidal_table(10, 8)
    assert table.shape == (11, 8)
    assert torch.all(table[0] == 0)
    assert torch.allclose(table[3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(table[3, 4], torch.cos(torch.tensor(3.0)))


@pytest.mark.parametrize("normalize_before", [False, True])
def test_incremental_decoding_matches_full_forward(normalize_before):
    model = make_model(normalize_before=normalize_before)
    src, lengths, prev = random_batch()
    full = model(src, lengths, prev)  # (B, T, V)
    enc = model.encode(src, lengths)
    cache = model.init_cache(enc)
    for t in range(1, prev.size(1) + 1):
        step_logits, cache = model.decode_step(prev[:, :t], enc, cache)
        assert cache.length == t
        torch.testing.assert_close(step_logits, full[:, t - 1], atol=1e-5, rtol=1e-5)
        uncached, none = model.decode_step(prev[:, :t], enc, None)
        assert none is None
        torch.testing.assert_close(uncached, full[:, t - 1], atol=1e-5, rtol=1e-5)


def test_decode_step_rejects_stale_cache():
    model = make_model()
    src, lengths, prev = random_batch()
    enc = model.encode(src, lengths)
    with pytest.raises(ValueError, match="expected a cache of 2"):
        model.decode_step(prev[:, :3], enc, model.init_cache(enc))


def test_reorder_cache_matches_reordered_batch():
    model = make_model()
    src, lengths, prev = random_batch()
    enc = model.encode(src, lengths)
    cache = model.init_cache(enc)
    for t in range(1, 4):
        _, cache = model.decode_step(prev[:, :t], enc, cache)
    order = torch.tensor([2, 0, 0])
    enc2 = model.reorder_encoder_out(enc, order)
    cache2 = model.reorder_cache(cache, order)
    logits, _ = model.decode_step(prev[order, :4], enc2, cache2)
    expected = model(src[order], lengths[order], prev[order, :4])[:, -1]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_causal_masking():
    model = make_model()
    src, lengths, prev = random_batch()
    changed = prev.clone()
    changed[:, 4] = (changed[:, 4] + 7) % (VOCAB - 5) + 5
    a, b = model(src, lengths, prev), model(src, lengths, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=1e-6)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3  # the change is visible from position 4


@pytest.mark.parametrize("side", ["right", "left"])
def test_source_padding_does_not_change_results(side):
    model = make_model()
    src, lengths, prev = random_batch()
    base = model(src[:1], lengths[:1], prev[:1])
    pad = torch.full((1, 5), PAD, dtype=torch.long)
    padded = torch.cat([src[:1], pad], 1) if side == "right" else torch.cat([pad, src[:1]], 1)
    torch.testing.assert_close(model(padded, lengths[:1], prev[:1]), base, atol=1e-5, rtol=1e-5)
    # and a batch mixing lengths equals the sentences run alone (row 1 is padded)
    alone = model(src[1:2, : int(lengths[1])], lengths[1:2], prev[1:2])
    torch.testing.assert_close(model(src, lengths, prev)[1:2], alone, atol=1e-5, rtol=1e-5)


def test_dropout_is_active_only_in_training():
    model = make_model()
    src, lengths, prev = random_batch()
    torch.testing.assert_close(model(src, lengths, prev), model(src, lengths, prev))
    model.train()
    assert not torch.allclose(model(src, lengths, prev), model(src, lengths, prev))


def test_bf16_autocast_close_to_fp32():
    model = make_model()
    src, lengths, prev = random_batch()
    ref = model(src, lengths, prev)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(src, lengths, prev)
    assert low.dtype == torch.float32  # logits are returned as float
    err = (low - ref).abs().max() / ref.abs().max()
    assert err < 0.05, float(err)
    agree = (low.argmax(-1) == ref.argmax(-1)).float().mean()
    assert agree > 0.8


def test_bf16_autocast_training_step_backward():
    model = make_model().train()
    src, lengths, prev = random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(
            model(src, lengths, prev).flatten(0, 1), prev.flatten()
        )
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_too_long_and_all_pad_inputs_raise():
    model = make_model(max_positions=8)
    src, lengths, prev = random_batch(src_len=10)
    with pytest.raises(ValueError, match="max_positions"):
        model(src, lengths, prev)
    src = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="non-pad"):
        model.encode(src, torch.zeros(2))
