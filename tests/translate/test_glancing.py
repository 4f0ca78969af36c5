"""Glancing training (nat/glancing.py): aligners and distances against brute force, the
positions that get reference embeddings, ratio 0 = plain NAT bit for bit, exact resume, the
schedule, bad options (exit 2), and ``latalign train --arch nat --criterion ctc`` + glancing
end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from latalign.align.bruteforce import enumerate_paths
from latalign.align.objective import Objective
from latalign.cli import main as cli_main
from latalign.translate.data import DataConfig
from latalign.translate.nat import NATConfig, NATransformer, nat_loss
from latalign.translate.nat.glancing import (
    ALIGNERS,
    NOT_GLANCED,
    Aligner,
    FirstPass,
    GlancingSchedule,
    align_ctc,
    align_latent,
    align_reference,
    choose_positions,
    ctc_viterbi,
    glance,
    hamming,
    register_aligner,
)
from latalign.translate.train import TrainConfig, train

PAD, BOS, EOS, BLANK = 0, 1, 2, 4
MICRO = dict(encoder_layers=1, decoder_layers=1, d_model=32, ffn_dim=64, heads=2, dropout=0.0)


def _collapse(labels: tuple[int, ...]) -> list[int]:
    return [c for k, c in enumerate(labels) if c != BLANK and (k == 0 or labels[k - 1] != c)]


def _brute_ctc(lp: torch.Tensor, target: list[int]) -> tuple[tuple[int, ...], float] | None:
    """The best frame labelling (T,) collapsing to ``target`` by enumeration, or None."""
    alphabet = sorted({BLANK, *target})
    best = None
    for labels in itertools.product(alphabet, repeat=lp.size(0)):
        if _collapse(labels) == target:
            score = float(sum(lp[t, c] for t, c in enumerate(labels)))
            if best is None or score > best[1]:
                best = (labels, score)
    return best


def test_ctc_viterbi_matches_brute_force() -> None:
    """Best CTC path, its score and its Hamming distance to the argmax, against enumerating
    every labelling; rows with repeats (ε needed between them), padding and no path."""
    torch.manual_seed(0)
    v = 8
    cases = [([5, 6], 4), ([5, 5], 4), ([6, 5, 6], 5), ([7], 3), ([5, 5, 5], 4), ([], 3),
             ([6, 7, 7], 5)]  # fmt: skip
    t_max, n_max = max(t for _, t in cases), max(len(y) for y, _ in cases)
    for trial in range(3):
        logits = torch.randn(len(cases), t_max, v) * 2
        targets = torch.tensor([y + [PAD] * (n_max - len(y)) for y, _ in cases])
        in_len = torch.tensor([t for _, t in cases])
        tg_len = torch.tensor([len(y) for y, _ in cases])
        lp_all = logits.double().log_softmax(-1)
        labels, score = ctc_viterbi(lp_all, targets, in_len, tg_len, BLANK)
        aligned = align_ctc(FirstPass(logits, targets, in_len, tg_len, BLANK, PAD))
        pred = logits.argmax(-1)
        dist = hamming(pred, aligned, PAD)
        for b, (y, t) in enumerate(cases):
            want = _brute_ctc(lp_all[b, :t], y)
            if want is None:  # [5, 5, 5] in 4 frames needs 5
                assert score[b] == -math.inf and bool(aligned[b].eq(PAD).all())
                assert int(dist[b]) == 0
                continue
            got = tuple(labels[b, :t].tolist())
            assert _collapse(got) == y
            assert math.isclose(float(score[b]), want[1], rel_tol=1e-9, abs_tol=1e-9)
            assert got == want[0]
            assert aligned[b, :t].tolist() == list(want[0])
            assert bool(aligned[b, t:].eq(PAD).all())
            brute = sum(int(pred[b, j]) != want[0][j] for j in range(t))
            assert int(dist[b]) == brute
        # raw logits give the same path: every frame emits once
        same, _ = ctc_viterbi(logits, targets, in_len, tg_len, BLANK)
        assert torch.equal(same, labels), trial


def _brute_latent_tokens(lp: torch.Tensor, target: list[int], operators: tuple[str, ...],
                         weights: dict[str, float] | None) -> list[int] | None:  # fmt: skip
    """The symbol each prediction scores on the enumerated best path (max), or None."""
    obj = Objective.make(operators, "max", weights, False)
    paths = enumerate_paths(lp.tolist(), target, obj, BLANK)
    paths = [p for p in paths if p[1] != -math.inf]
    if not paths:
        return None
    ops, _ = max(paths, key=lambda p: p[1])
    i, out = 0, []
    for op in ops:
        if op == "align":
            i += 1
            out.append(target[i - 1])
        elif op == "clone_target":
            out.append(target[i - 1])
        elif op == "clone_prediction":
            i += 1
        else:
            out.append(BLANK)
    return out


@pytest.mark.parametrize(
    ("operators", "weights"),
    [
        (("align", "clone_target", "delimiter"), None),
        (("align", "clone_target", "clone_prediction", "delimiter"), {"clone_prediction": 2.0}),
        (("align", "delimiter"), None),
    ],
)
def test_latent_aligner_matches_brute_force(operators: tuple[str, ...], weights: Any) -> None:
    torch.manual_seed(1)
    cases = [([5, 6], 4), ([5, 5, 6], 4), ([7], 2), ([5, 6, 7], 3), ([6, 5, 6, 7], 3)]
    t_max, n_max = max(t for _, t in cases), max(len(y) for y, _ in cases)
    logits = torch.randn(len(cases), t_max, 9) * 2
    targets = torch.tensor([y + [PAD] * (n_max - len(y)) for y, _ in cases])
    in_len = torch.tensor([t for _, t in cases])
    tg_len = torch.tensor([len(y) for y, _ in cases])
    options = {"operators": operators, "weights": weights}
    aligned = align_latent(FirstPass(logits, targets, in_len, tg_len, BLANK, PAD, options))
    dist = hamming(logits.argmax(-1), aligned, PAD)
    for b, (y, t) in enumerate(cases):
        want = _brute_latent_tokens(logits[b, :t].log_softmax(-1).double(), y, operators, weights)
        if want is None:
            assert bool(aligned[b].eq(PAD).all()) and int(dist[b]) == 0
            continue
        assert aligned[b, :t].tolist() == want and bool(aligned[b, t:].eq(PAD).all())
        pred = logits[b, :t].argmax(-1).tolist()
        assert int(dist[b]) == sum(p != a for p, a in zip(pred, want))


def test_reference_aligner_and_hamming() -> None:
    logits = torch.zeros(2, 4, 9)
    logits[0, torch.arange(4), torch.tensor([5, 7, 7, 8])] = 1.0  # prediction 5 7 7 8
    logits[1, torch.arange(4), torch.tensor([6, 6, 3, 3])] = 1.0
    target = torch.tensor([[5, 6, 7, 8], [6, 6, PAD, PAD]])
    lengths = torch.tensor([4, 2])
    aligned = align_reference(FirstPass(logits, target, lengths, lengths, BLANK, PAD))
    assert aligned.tolist() == [[5, 6, 7, 8], [6, 6, PAD, PAD]]
    assert hamming(logits.argmax(-1), aligned, PAD).tolist() == [1, 0]


def test_choose_positions_counts_and_candidates() -> None:
    torch.manual_seed(0)
    cand = torch.tensor([[True] * 6, [True, True, True, False, False, False], [False] * 6])
    for ratio, dist, want in [(1.0, [6, 3, 0], [6, 3, 0]), (0.5, [5, 3, 0], [2, 1, 0]),
                              (0.3, [3, 3, 0], [0, 0, 0])]:  # fmt: skip
        chosen = choose_positions(torch.tensor(dist), ratio, cand)
        assert chosen.sum(1).tolist() == want
        assert not bool((chosen & ~cand).any())
    # deterministic under the seed, different draws otherwise
    draws = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        draws.append(choose_positions(torch.tensor([3, 1, 0]), 1.0, cand))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_schedule() -> None:
    s = GlancingSchedule(0.5, 0.3, 100)
    assert [s.ratio(u) for u in (0, 50, 100, 400)] == pytest.approx([0.5, 0.4, 0.3, 0.3])
    assert GlancingSchedule(0.5, 0.5, 0).ratio(10**6) == 0.5


def _micro(**nat: Any) -> NATransformer:
    torch.manual_seed(0)
    return NATransformer(NATConfig(vocab_size=24, max_positions=64, **MICRO, **nat))


@pytest.mark.parametrize("criterion", ["ce", "ctc"])
def test_ratio_one_feeds_the_aligned_reference_where_the_prediction_differs(criterion: str) -> None:
    """At ratio 1 an untrained model (its argmax is wrong everywhere) is fed the whole aligned
    reference: every output position's decoder input is the reference token's embedding plus
    its position; a position glanced and one not are told apart in the decoder input."""
    length = "upsample" if criterion == "ctc" else "predict"
    model = _micro(length=length).train()
    src = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]])
    target = torch.tensor([[10, 11, 11], [12, 13, PAD]])
    n = torch.tensor([3, 2])
    # make the argmax an id that is never a reference token: distance = every position
    project = model._project

    def spare_wins(x: torch.Tensor) -> torch.Tensor:
        logits = project(x)
        return logits.index_fill(-1, torch.tensor([3]), 1e4)  # id 3 is never a reference token

    model._project = spare_wins  # type: ignore[method-assign]
    torch.manual_seed(0)
    g = glance(model, src, src.ne(PAD).sum(1), target, n, criterion=criterion, ratio=1.0,
               blank_id=BLANK, pad_id=PAD)  # fmt: skip
    out = model(src, src.ne(PAD).sum(1), n)
    t_len = out.output_lengths
    valid = torch.arange(g.tokens.size(1))[None, :] < t_len[:, None]
    aligned = ALIGNERS[criterion].align(FirstPass(out.logits, target, t_len, n, BLANK, PAD))
    assert g.distance.tolist() == t_len.tolist() == g.glanced.tolist()
    assert torch.equal(g.mask, valid) and torch.equal(g.tokens[valid], aligned[valid])
    model.eval()  # no dropout: compare inputs exactly
    x = model.decoder_input(src, t_len, g.tokens)
    embed = model.embed_scale * model.decoder_embed(aligned.clamp(min=0))
    pos = model.positions_table[(torch.arange(x.size(1))[None, :] + 1) * valid]
    torch.testing.assert_close(x[valid], (embed + pos)[valid])
    plain = model.decoder_input(src, t_len)
    half = g.tokens.clone()
    half[:, 1:] = NOT_GLANCED
    mixed = model.decoder_input(src, t_len, half)
    torch.testing.assert_close(mixed[:, 1:], plain[:, 1:])
    torch.testing.assert_close(mixed[:, 0], x[:, 0])


def test_ce_leaves_glanced_positions_out() -> None:
    model = _micro(length="predict").eval()
    src = torch.tensor([[5, 6, 7, EOS]])
    target, n = torch.tensor([[10, 11, 12]]), torch.tensor([3])
    tokens = torch.tensor([[10, NOT_GLANCED, 12]])
    from latalign.translate.nat.glancing import Glance

    g = Glance(tokens=tokens, distance=torch.tensor([3]), glanced=torch.tensor([2]))
    masked = g.loss_target(target, PAD)
    assert masked.tolist() == [[PAD, 11, PAD]]
    out = model(src, None, n, tokens)
    loss, stats = nat_loss(out, masked, n, src, model, "ce", blank_id=BLANK, pad_id=PAD,
                           length_loss_weight=0.0)  # fmt: skip
    want = torch.nn.functional.cross_entropy(out.logits[0, 1:2].float(), target[0, 1:2])
    assert stats["ntokens"] == 1
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


def test_register_aligner() -> None:
    with pytest.raises(ValueError, match="without an aligner"):
        register_aligner("ctc", Aligner(align_reference))
    entry = Aligner(align_reference)
    try:
        assert register_aligner("dag_test", entry) is entry and ALIGNERS["dag_test"] is entry
    finally:
        del ALIGNERS["dag_test"]


# --------------------------------------------------------------------------- the loop


def _config(run_dir: Path, cache: Path, **kw: Any) -> TrainConfig:
    fields: dict[str, Any] = dict(
        run_dir=str(run_dir), arch="nat", criterion="ctc",
        data=DataConfig(synthetic_size=60, synthetic_eval_size=8, vocab_size=100),
        preset="tiny", model={**MICRO, "dropout": 0.1}, max_tokens=400, warmup_updates=2,
        lr=1e-2, validate_every=1000, log_every=1, cache_dir=str(cache), device="cpu",
    )  # fmt: skip
    fields.update(kw)
    return TrainConfig(**fields)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["model"]


def _losses(result: Any) -> list[float]:
    return [r["train_loss"] for r in result.history if r["kind"] == "train"]


@pytest.mark.parametrize("criterion", ["ce", "ctc"])
def test_ratio_zero_is_plain_nat_bit_for_bit(
    tmp_path: Path, one_thread: None, criterion: str
) -> None:
    cache = tmp_path / "cache"
    plain = train(_config(tmp_path / "plain", cache, criterion=criterion, max_updates=3),
                  progress=False)  # fmt: skip
    zero = train(_config(tmp_path / "zero", cache, criterion=criterion, max_updates=3,
                         glat_ratio=0.0, glat_ratio_end=0.0), progress=False)  # fmt: skip
    glat = train(_config(tmp_path / "glat", cache, criterion=criterion, max_updates=3,
                         glat_ratio=0.5), progress=False)  # fmt: skip
    assert _losses(zero) == _losses(plain)
    a, b, c = (_params(r.last_checkpoint) for r in (plain, zero, glat))
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0)
    assert any(not torch.equal(c[k], v) for k, v in a.items())  # glancing changes training
    records = [r for r in glat.history if r["kind"] == "train"]
    assert all(r["train_glanced"] > 0 for r in records)
    assert all("train_glanced" not in r for r in plain.history)


def test_glancing_resume_is_exact(tmp_path: Path, one_thread: None) -> None:
    cache = tmp_path / "cache"
    kw = dict(glat_ratio=0.5, glat_ratio_end=0.3, glat_updates=4)
    straight = train(_config(tmp_path / "a", cache, max_updates=4, **kw), progress=False)
    train(_config(tmp_path / "b", cache, max_updates=2, **kw), progress=False)
    resumed = train(_config(tmp_path / "b", cache, max_updates=4, **kw), progress=False)
    a, b = _params(straight.last_checkpoint), _params(resumed.last_checkpoint)
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0)
    assert _losses(resumed) == _losses(straight)[2:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--glat-ratio", "1.5"], "--glat-ratio in [0, 1]"),
        (["--glat-ratio", "0.5", "--glat-ratio-end", "-0.1"], "--glat-ratio-end in [0, 1]"),
        (["--glat-ratio-end", "0.3"], "expected --glat-ratio with --glat-ratio-end"),
        (["--glat-ratio", "0.5", "--glat-updates", "0"], "--glat-updates >= 1"),
        (["--glat-ratio", "0.5", "--glat-ratio-end", "0.3", "--max-updates", "0"],
         "--glat-updates or --max-updates"),
        (["--glat-ratio", "0.5", "--arch", "ar", "--criterion", "ce"], "options of arch 'ar'"),
        (["--glat-ratio", "nan"], "expected finite"),
    ],
)  # fmt: skip
def test_bad_glancing_options_exit_2(
    tmp_path: Path, capsys: Any, args: list[str], message: str
) -> None:
    base = ["train", "--run-dir", str(tmp_path / "x"), "--arch", "nat", "--criterion", "ctc",
            "--preset", "tiny", "--max-updates", "10", "--device", "cpu"]  # fmt: skip
    code = cli_main(base + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") <= 2, err
    assert not (tmp_path / "x").exists()


def test_cli_trains_and_decodes_nat_ctc_with_glancing(
    tmp_path: Path, one_thread: None, capsys: Any
) -> None:
    run = tmp_path / "run"
    code = cli_main(["train", "--run-dir", str(run), "--arch", "nat", "--criterion", "ctc",
                     "--preset", "tiny", "--synthetic-size", "60", "--synthetic-eval-size", "8",
                     "--vocab-size", "100", "--max-tokens", "400", "--max-updates", "4",
                     "--log-every", "1", "--glat-ratio", "0.5", "--glat-ratio-end", "0.3",
                     "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                     "--no-progress"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert len(train_records) == 4 and all(r["train_glanced"] > 0 for r in train_records)
    assert json.loads((run / "config.json").read_text())["glat_ratio_end"] == 0.3
    code = cli_main(["evaluate", "--run-dir", str(run), "--split", "test", "--device", "cpu",
                     "--json"])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["sentences"] == 8 and math.isfinite(scores["bleu"])
