"""Non-autoregressive translation: model, criteria (against the align functions and torch's
CTC), decoding (length beam, CTC collapse), the ``--arch nat`` plumbing and its bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import latalign
from latalign.cli import main as cli_main
from latalign.translate.batching import collate
from latalign.translate.data import DataConfig
from latalign.translate.decode import SearchOptions, translate_sentences
from latalign.translate.nat import (
    NATConfig,
    NATransformer,
    check_nat_criterion,
    ctc_collapse,
    decode_batch,
    length_beam_decode,
    nat_loss,
    nat_targets,
)
from latalign.translate.run import load_run
from latalign.translate.tokenizer import SpecialIds
from latalign.translate.train import TrainConfig, train

PAD, BOS, EOS, BLANK = 0, 1, 2, 4


@pytest.fixture(autouse=True, scope="module")
def _fast_cpu() -> Any:
    """One torch thread, one numba thread, no denormals. numba's idle pool threads spinning
    next to torch made these tiny steps 5x slower (60 NAT-CTC steps: 10.8 s vs 1.9 s)."""
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_num_threads(threads)
    numba.set_num_threads(numba_threads)
    torch.set_flush_denormal(False)


MICRO = dict(encoder_layers=1, decoder_layers=1, d_model=32, ffn_dim=64, heads=2, dropout=0.0)


def micro_model(vocab: int = 24, **nat: Any) -> NATransformer:
    return NATransformer(NATConfig(vocab_size=vocab, max_positions=64, **MICRO, **nat))


def toy_batch() -> Any:
    """Six pairs: target = a fixed word mapping of the source, some with repeated neighbours
    (CTC needs ε between them) and a length change."""
    word = {t: 5 + (t * 7) % 19 for t in range(5, 24)}
    sources = [[5, 6, 7], [8, 9, 10, 11], [12, 12, 13], [14, 15], [16, 17, 18, 19, 20], [21, 22]]
    examples = []
    for i, s in enumerate(sources):
        t = [word[x] for x in s]
        if i == 3:
            t = t + t[:1]  # one longer target
        examples.append((i, torch.tensor(s), torch.tensor(t)))
    return collate(examples, PAD, BOS, EOS)


def fit(model: NATransformer, batch: Any, criterion: str, steps: int, lr: float = 1e-2) -> None:
    torch.manual_seed(0)
    target, n = nat_targets(batch.target, batch.target_lengths, PAD)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        out = model(batch.src_tokens, batch.src_lengths, n)
        loss, stats = nat_loss(out, target, n, batch.src_tokens, model, criterion, blank_id=BLANK)
        opt.zero_grad()
        (loss / stats["ntokens"]).backward()
        opt.step()


def gold(batch: Any) -> list[list[int]]:
    target, n = nat_targets(batch.target, batch.target_lengths, PAD)
    return [target[i, : int(k)].tolist() for i, k in enumerate(n)]


# --------------------------------------------------------------------------- model


def test_nat_targets_drop_eos() -> None:
    batch = toy_batch()
    target, n = nat_targets(batch.target, batch.target_lengths, PAD)
    assert n.tolist() == (batch.target_lengths - 1).tolist()
    assert not bool(target.eq(EOS).any())
    assert gold(batch)[3] == batch.target[3, :3].tolist()


def test_uniform_copy_indices() -> None:
    torch.manual_seed(0)
    model = micro_model().eval()
    src = torch.tensor([[7, 8, EOS]])  # S = 3
    x = model.decoder_input(src, torch.tensor([6]))  # T = 6: round(j * 2 / 5)
    emb = model.embed_scale * model.encoder_embed(src)[0]
    want = emb[[0, 0, 1, 1, 2, 2]] + model.positions_table[1:7]
    torch.testing.assert_close(x[0], want)


def test_decoder_is_not_causal() -> None:
    """With the mask input the first positions' inputs do not depend on the length; a causal
    decoder would give them equal outputs at lengths 4 and 5, this one must not."""
    torch.manual_seed(0)
    model = micro_model(decoder_input="mask").eval()
    src = torch.tensor([[7, 8, 9, EOS]])
    enc = model.encode(src)
    a = model.decode_all(enc, src, torch.tensor([4]))
    b = model.decode_all(enc, src, torch.tensor([5]))
    assert not torch.allclose(a[0, :4], b[0, :4], atol=1e-4)


@pytest.mark.parametrize("decoder_input", ["copy", "mask"])
def test_padding_does_not_change_a_row(decoder_input: str) -> None:
    torch.manual_seed(0)
    model = micro_model(decoder_input=decoder_input, length="upsample").eval()
    batch = toy_batch()
    with torch.no_grad():
        out = model(batch.src_tokens, batch.src_lengths)
        for i in range(batch.src_tokens.size(0)):
            k = int(batch.src_lengths[i])
            alone = model(batch.src_tokens[i : i + 1, :k])
            t = int(alone.output_lengths[0])
            assert int(out.output_lengths[i]) == t == 2 * k
            torch.testing.assert_close(out.logits[i, :t], alone.logits[0], atol=1e-5, rtol=1e-5)


def test_bad_config_values() -> None:
    with pytest.raises(ValueError, match="upsample >= 1"):
        NATConfig(vocab_size=20, upsample=0)
    with pytest.raises(ValueError, match="decoder_input"):
        NATConfig(vocab_size=20, decoder_input="zeros")
    with pytest.raises(ValueError, match="NATConfig"):
        NATransformer(latalign.translate.config.ModelConfig(vocab_size=20))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NAT criterion"):
        check_nat_criterion("causal_axe", {})
    model = micro_model()
    with pytest.raises(ValueError, match="target_lengths"):
        model(torch.tensor([[5, EOS]]))
    with pytest.raises(ValueError, match="not autoregressive|NAT model"):
        model.decode_step(torch.tensor([[BOS]]), None, None)


# --------------------------------------------------------------------------- criteria


def _random_case(seed: int = 0) -> tuple[Any, Any, NATransformer]:
    torch.manual_seed(seed)
    batch = toy_batch()
    return batch, nat_targets(batch.target, batch.target_lengths, PAD), micro_model()


@pytest.mark.parametrize("criterion", ["ctc", "latent"])
def test_upsample_criteria_match_direct_calls(criterion: str) -> None:
    batch, (target, n), _ = _random_case()
    model = micro_model(length="upsample")
    out = model(batch.src_tokens, batch.src_lengths)
    loss, stats = nat_loss(out, target, n, batch.src_tokens, model, criterion, blank_id=BLANK)
    lengths = 2 * batch.src_lengths
    assert out.output_lengths.tolist() == lengths.tolist() and out.length_logits is None
    if criterion == "ctc":
        want = latalign.ctc_loss(out.logits, target, lengths, n, blank=BLANK, reduction="sum",
                                 zero_infinity=True, from_logits=True)  # fmt: skip
        # an independent oracle: torch's own CTC on the same log-probs
        lp = torch.log_softmax(out.logits, -1).transpose(0, 1)
        torch_ctc = F.ctc_loss(lp, target, lengths, n, blank=BLANK, reduction="sum",
                               zero_infinity=True)  # fmt: skip
        torch.testing.assert_close(loss, torch_ctc, rtol=1e-4, atol=1e-4)
    else:
        want = latalign.latent_alignment_loss(
            out.logits, target, lengths, n, operators=("align", "clone_target", "delimiter"),
            blank=BLANK, reduction="sum", zero_infinity=True, from_logits=True,
        )  # fmt: skip
    torch.testing.assert_close(loss, want)
    assert stats["ntokens"] == int(n.sum()) and stats["nsentences"] == 6
    assert stats["loss"] == pytest.approx(float(loss.detach()))


@pytest.mark.parametrize("criterion", ["ce", "label_smoothed_ce", "axe"])
def test_predict_criteria_match_direct_calls(criterion: str) -> None:
    batch, (target, n), model = _random_case(1)
    out = model(batch.src_tokens, batch.src_lengths, n)
    w = 0.3
    loss, stats = nat_loss(
        out, target, n, batch.src_tokens, model, criterion, blank_id=BLANK,
        length_loss_weight=w,
    )  # fmt: skip
    lp = torch.log_softmax(out.logits, -1)
    if criterion == "axe":
        token = latalign.axe_loss(out.logits, target, n, n, blank=BLANK, reduction="sum",
                                  zero_infinity=True, from_logits=True)  # fmt: skip
    else:
        eps = 0.1 if criterion == "label_smoothed_ce" else 0.0
        token = F.cross_entropy(
            out.logits.reshape(-1, out.logits.size(-1)), target.reshape(-1),
            ignore_index=PAD, reduction="sum", label_smoothing=0.0,
        )  # fmt: skip
        if eps:  # fairseq's formula, written out
            keep = target.ne(PAD)
            nll = -lp.gather(-1, target[..., None])[..., 0][keep].sum()
            smooth = -lp.sum(-1)[keep].sum()
            eps_i = eps / (lp.size(-1) - 1)
            token = (1 - eps - eps_i) * nll + eps_i * smooth
    k = model.cfg.max_length_offset
    classes = (n - batch.src_lengths).clamp(-k, k) + k
    length_nll = F.cross_entropy(out.length_logits, classes, reduction="sum")
    want = token + w * length_nll * (int(n.sum()) / 6)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    assert stats["length_loss"] / stats["ntokens"] == pytest.approx(float(length_nll.detach()) / 6)


def test_criterion_options_checked() -> None:
    with pytest.raises(ValueError, match="options of NAT criterion 'ctc'"):
        check_nat_criterion("ctc", {"delta": 1.0})
    with pytest.raises(ValueError, match="causal=False"):
        check_nat_criterion("latent", {"causal": True})


# --------------------------------------------------------------------------- decoding


def test_ctc_collapse() -> None:
    assert ctc_collapse([7, 7, BLANK, 7, 8, 8, BLANK, BLANK], BLANK) == [7, 7, 8]
    assert ctc_collapse([BLANK, BLANK], BLANK) == []


def test_nat_ctc_reproduces_training_sentences() -> None:
    batch = toy_batch()
    model = micro_model(length="upsample")
    fit(model, batch, "ctc", steps=120)
    assert decode_batch(model, batch.src_tokens) == gold(batch)
    assert gold(batch)[2][0] == gold(batch)[2][1]  # a repeat that needed an ε between


def test_length_beam_returns_gold_length() -> None:
    batch = toy_batch()
    model = micro_model(length="predict")
    fit(model, batch, "ce", steps=100)
    hyps, lengths = length_beam_decode(model.eval(), batch.src_tokens, return_lengths=True)
    assert lengths.tolist() == (batch.target_lengths - 1).tolist()
    assert hyps == gold(batch)


class _StubLengthModel:
    """Length classifier ranks lengths 3 > 4 > 5; the decoder is sure of every token only at
    length 4 (mean log-prob 0) and unsure (uniform) elsewhere: the beam must pick 4."""

    def __init__(self, vocab: int = 10) -> None:
        self.vocab = vocab

    def encode(self, src_tokens: torch.Tensor) -> Any:
        from latalign.translate.model import EncoderOut

        return EncoderOut(torch.zeros(src_tokens.size(0), src_tokens.size(1), 2),
                          src_tokens.eq(PAD))  # fmt: skip

    def length_logits(self, enc: Any) -> torch.Tensor:
        return torch.tensor([[0.0, 3.0, 2.0, 1.0]]).expand(enc.out.size(0), -1)  # classes 0..3

    def lengths_of_classes(self, classes: torch.Tensor, src_tokens: torch.Tensor) -> torch.Tensor:
        return classes + 2  # class c -> length c + 2

    def decode_all(
        self, enc: Any, src: torch.Tensor, lengths: torch.Tensor, rows: Any = None
    ) -> torch.Tensor:
        t = int(lengths.max())
        logits = torch.zeros(lengths.numel(), t, self.vocab)
        for row, n in enumerate(lengths.tolist()):
            if n == 4:
                logits[row, :, 6] = 50.0
        return logits


def test_length_beam_prefers_the_best_mean_log_prob() -> None:
    src = torch.tensor([[5, 6, EOS], [7, EOS, PAD]])
    stub: Any = _StubLengthModel()
    hyps, lengths = length_beam_decode(stub, src, length_beam=3, return_lengths=True)
    assert lengths.tolist() == [4, 4] and hyps == [[6] * 4, [6] * 4]
    # with a beam of 1 the classifier's top length (3) is taken as it is
    _, lengths = length_beam_decode(stub, src, length_beam=1, return_lengths=True)
    assert lengths.tolist() == [3, 3]
    with pytest.raises(ValueError, match="length_beam >= 1"):
        length_beam_decode(stub, src, length_beam=0)


# --------------------------------------------------------------------------- --arch nat


def _nat_config(run_dir: Path, cache: Path, **kw: Any) -> TrainConfig:
    fields: dict[str, Any] = dict(
        run_dir=str(run_dir), arch="nat", criterion="ctc",
        data=DataConfig(synthetic_size=60, synthetic_eval_size=8, vocab_size=100),
        preset="tiny", model=dict(MICRO), max_tokens=400, warmup_updates=2,
        validate_every=1000, log_every=1, cache_dir=str(cache), device="cpu",
    )  # fmt: skip
    fields.update(kw)
    return TrainConfig(**fields)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(arch="nat", criterion="causal_axe"), "criterion of arch 'nat'"),
        (dict(arch="nat", criterion="ctc", upsample=0), "upsample >= 1"),
        (dict(arch="nat", criterion="ce", upsample=2), "--upsample only with"),
        (dict(arch="nat", criterion="ctc", length_beam=2), "no --length-beam"),
        (dict(arch="nat", criterion="axe", nat_input="zeros"), "copy or mask"),
        (dict(arch="nat", criterion="axe", length_loss_weight=-1.0), "length_loss_weight >= 0"),
        (dict(arch="ar", criterion="ce", upsample=2), "options of arch 'ar'"),
    ],
)
def test_bad_arch_criterion_pairs(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(preset="tiny", **overrides)


def test_train_translate_and_refusals(tmp_path: Path, one_thread: None, capsys: Any) -> None:
    """``train --arch nat`` through the one loop, exact resume, ``evaluate`` on the NAT run,
    and exit status 2 for an AR/NAT mix-up."""
    cache = tmp_path / "cache"
    straight = train(_nat_config(tmp_path / "a", cache, max_updates=4), progress=False)
    train(_nat_config(tmp_path / "b", cache, max_updates=2), progress=False)
    resumed = train(_nat_config(tmp_path / "b", cache, max_updates=4), progress=False)
    assert resumed.step == straight.step == 4
    sa = torch.load(straight.last_checkpoint, weights_only=False)
    sb = torch.load(resumed.last_checkpoint, weights_only=False)
    assert sa["train_config"]["arch"] == "nat" and sa["model_config"]["length"] == "upsample"
    for key, value in sa["model"].items():
        torch.testing.assert_close(sb["model"][key], value, rtol=0, atol=0)
    assert [r["train_loss"] for r in resumed.history if r["kind"] == "train"] == [
        r["train_loss"] for r in straight.history if r["kind"] == "train"
    ][2:]

    assert isinstance(load_run(tmp_path / "a").model, NATransformer)
    code = cli_main(["evaluate", "--run-dir", str(tmp_path / "a"), "--split", "test",
                     "--device", "cpu", "--json"])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["sentences"] == 8 and math.isfinite(scores["bleu"])

    # the run directory of a NAT run refuses an AR run (and the reverse), before any work
    before = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    code = cli_main(["train", "--run-dir", str(tmp_path / "a"), "--arch", "ar", "--preset",
                     "tiny", "--synthetic-size", "60", "--max-updates", "1", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "arch" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == before
    code = cli_main(["train", "--run-dir", str(tmp_path / "x"), "--arch", "nat", "--criterion",
                     "ctc", "--upsample", "0"])  # fmt: skip
    assert code == 2 and "upsample >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_length_beam_option_of_translate_and_evaluate(
    tmp_path: Path, one_thread: None, capsys: Any
) -> None:
    """``--length-beam K`` reaches the NAT decoder of a length-predicting run (the CLI and
    ``TrainedRun.translate`` agree with the length beam decoder at K); CTC and AR runs, and
    K < 1, are refused with exit status 2 and one line before any decoding."""

    cache = tmp_path / "cache"
    run = tmp_path / "axe"
    train(_nat_config(run, cache, criterion="axe", max_updates=3), progress=False)
    trained = load_run(run)
    model, tok = trained.model, trained.tokenizer
    src = tmp_path / "src.txt"
    lines = ["a b c", "d e f g h", "i j"]
    src.write_text("\n".join(lines) + "\n")
    for k in (1, 4):

        def decode(m: Any, src: Any, _lengths: Any, k: int = k) -> list[list[int]]:
            return decode_batch(m, src, length_beam=k, ids=SpecialIds(blank=BLANK))

        want = translate_sentences(model, tok, lines, decode_batch=decode)
        assert trained.translate(lines, SearchOptions(length_beam=k, device="cpu")) == want
        out = tmp_path / f"out{k}.txt"
        code = cli_main(["translate", "--run-dir", str(run), "--input", str(src), "--output",
                         str(out), "--device", "cpu", "--length-beam", str(k)])  # fmt: skip
        assert code == 0 and out.read_text().splitlines() == want
    code = cli_main(["evaluate", "--run-dir", str(run), "--split", "test", "--device", "cpu",
                     "--length-beam", "2", "--json"])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["length_beam"] == 2 and scores["sentences"] == 8

    ctc = tmp_path / "ctc"
    train(_nat_config(ctc, cache, max_updates=1), progress=False)
    ar = tmp_path / "ar"
    train(_nat_config(ar, cache, arch="ar", criterion="ce", max_updates=1), progress=False)
    for run_dir, flag, message in [
        (ctc, "2", "with a length predictor"),
        (ar, "2", "non-autoregressive run"),
        (run, "0", "--length-beam >= 1"),
    ]:
        for command in (["translate", "--input", str(src)], ["evaluate", "--json"]):
            code = cli_main([*command, "--run-dir", str(run_dir), "--device", "cpu",
                             "--length-beam", flag])  # fmt: skip
            captured = capsys.readouterr()
            assert code == 2 and message in captured.err and captured.err.count("\n") == 1
            assert captured.out == ""


def test_decoding_equals_a_log_softmax_reference() -> None:
    """The decoders take argmaxes of logits and score with one logsumexp per position;
    a direct (B, T, V) log-softmax reference picks the same tokens and lengths."""
    torch.manual_seed(3)
    src = torch.tensor([[5, 6, 7, 8, EOS], [9, 10, EOS, PAD, PAD], [11, EOS, PAD, PAD, PAD]])
    banned = [PAD, BOS, EOS]
    model = micro_model(length="predict", max_length_offset=4).eval()
    with torch.inference_mode():
        hyps, lengths = length_beam_decode(model, src, length_beam=4, return_lengths=True)
        enc = model.encode(src)
        classes = model.length_logits(enc).topk(4, dim=1).indices
        cand = model.lengths_of_classes(classes, src)  # (B, 4)
        for b in range(src.size(0)):
            scored = []
            for n in cand[b].tolist():
                lp = torch.log_softmax(
                    model.decode_all(model.encode(src[b : b + 1]), src[b : b + 1],
                                     torch.tensor([n]))[0],
                    dim=-1,
                )  # fmt: skip
                lp[:, banned] = -math.inf
                best, tok = lp.max(dim=-1)
                scored.append((float(best.mean()), n, [t for t in tok.tolist() if t != BLANK]))
            score, n, tokens = max(scored, key=lambda x: x[0])
            assert int(lengths[b]) == n and hyps[b] == tokens
        ctc_model = micro_model(length="upsample", upsample=2).eval()
        out = decode_batch(ctc_model, src, ids=SpecialIds(blank=BLANK))
        for b in range(src.size(0)):
            s = src[b : b + 1, : int((src[b] != PAD).sum())]
            logits = ctc_model.decode_all(
                ctc_model.encode(s), s, ctc_model.upsampled_lengths(s)
            )[0]  # fmt: skip
            lp = torch.log_softmax(logits, dim=-1)
            lp[:, banned] = -math.inf
            assert out[b] == ctc_collapse(lp.argmax(dim=-1).tolist(), BLANK)
