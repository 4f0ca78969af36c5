"""``--arch dag`` (translate/nat/dag.py): the transition head's mask and normalisation, the
arch's loss against ``latalign.dag_loss``, a target longer than its graph, the glancing
aligner against the library's best path, greedy and lookahead decoding against a plain
Python walk, glancing ratio 0 = no glancing bit for bit, ``latalign train --arch dag``
reducing its loss and decoding through ``load_run``, and bad options (one line, exit 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import latalign
from latalign.cli import main as cli_main
from latalign.translate.data import DataConfig
from latalign.translate.decode import OptionError, SearchOptions
from latalign.translate.nat.dag import (
    DAGConfig,
    DAGLoss,
    DAGOutput,
    DAGTransformer,
    align_dag,
    dag_decode,
    dag_next_vertices,
    dag_targets,
    dag_transitions,
    dag_walk,
)
from latalign.translate.nat.glancing import ALIGNERS, FirstPass, glance
from latalign.translate.run import load_run
from latalign.translate.train import TrainConfig, train

PAD, BOS, EOS, UNK, BLANK = 0, 1, 2, 3, 4
MICRO = dict(encoder_layers=1, decoder_layers=1, d_model=32, ffn_dim=64, heads=2, dropout=0.0)
TOKENIZER = SimpleNamespace(pad_id=PAD, bos_id=BOS, eos_id=EOS, blank_id=BLANK)


def _micro(upsample: int = 3, **kw: Any) -> DAGTransformer:
    torch.manual_seed(0)
    return DAGTransformer(DAGConfig(vocab_size=24, max_positions=64, upsample=upsample, **MICRO,
                                    **kw))  # fmt: skip


def _batch(src: list[list[int]], tgt: list[list[int]]) -> SimpleNamespace:
    """A collated batch: sources (eos included) and targets ``y_1 .. y_n`` (eos appended)."""
    s_len, t_len = max(map(len, src)), max(map(len, tgt)) + 1
    src_tokens = torch.tensor([s + [PAD] * (s_len - len(s)) for s in src])
    target = torch.tensor([t + [EOS] + [PAD] * (t_len - len(t) - 1) for t in tgt])
    return SimpleNamespace(
        src_tokens=src_tokens, src_lengths=src_tokens.ne(PAD).sum(1), target=target,
        target_lengths=torch.tensor([len(t) + 1 for t in tgt]),
    )  # fmt: skip


# --------------------------------------------------------------------------- transition head


def test_transition_head_is_masked_and_normalised() -> None:
    model = _micro(upsample=2).train()
    src = torch.tensor([[5, 6, 7, EOS], [8, EOS, PAD, PAD], [EOS, PAD, PAD, PAD]])
    out = model(src)
    assert out.output_lengths.tolist() == [8, 4, 2] and out.length_logits is None
    tr = out.transitions
    assert tr.requires_grad and tr.shape == (3, 8, 8) and tr.dtype == torch.float32
    for b, length in enumerate(out.output_lengths.tolist()):
        for u in range(8):
            for v in range(8):
                allowed = u < v < length
                assert math.isfinite(float(tr[b, u, v].detach())) == allowed, (b, u, v)
            if u < length - 1:  # a row with a later vertex: a distribution
                total = float(tr[b, u].detach().exp().sum())
                assert abs(total - 1.0) < 1e-5, (b, u, total)
    # the head is the scaled dot product of the projected last-layer states
    states = model.decode_states(model.encode(src), src, out.output_lengths)
    q, k = model.link_query(states), model.link_key(states)
    scores = q @ k.transpose(1, 2) / math.sqrt(32)
    want = dag_transitions(scores, out.output_lengths)
    torch.testing.assert_close(tr, want)
    tr.masked_fill(torch.isinf(tr), 0.0).sum().backward()  # finite gradients everywhere
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.link_query.weight.grad.abs().sum() > 0


def test_dag_transitions_rows_without_a_later_vertex() -> None:
    scores = torch.randn(2, 4, 4, requires_grad=True)
    out = dag_transitions(scores, torch.tensor([4, 1]))
    assert torch.isinf(out[1]).all() and torch.isinf(out[0, 3]).all()
    out.masked_fill(torch.isinf(out), 0.0).sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[1].eq(0).all()


# --------------------------------------------------------------------------- loss


def test_dag_targets_are_bos_sentence_eos() -> None:
    batch = _batch([[5, EOS]] * 3, [[7, 8, 9], [10], []])
    target, lengths = dag_targets(batch.target, batch.target_lengths, bos_id=BOS, pad_id=PAD)
    assert lengths.tolist() == [5, 3, 2]
    assert target.tolist() == [[BOS, 7, 8, 9, EOS], [BOS, 10, EOS, PAD, PAD],
                               [BOS, EOS, PAD, PAD, PAD]]  # fmt: skip


def test_arch_loss_is_the_library_mean_and_a_long_target_scores_zero() -> None:
    """The loop's per-token loss (loss sum / ntokens) is ``latalign.dag_loss(mean)`` on the
    model's outputs and DA-T's targets; the third sentence (6 + 2 target tokens, 4 vertices)
    has no path: it adds 0 and no gradient, the loss stays finite (no crash)."""
    model = _micro(upsample=2).eval()
    batch = _batch([[5, 6, EOS], [7, 8, 9, EOS], [10, EOS]],
                   [[11, 12], [13, 14, 14, 15], [16, 17, 18, 19, 20, 21]])  # fmt: skip
    cfg = TrainConfig(arch="dag", criterion="dag")
    loss, stats = DAGLoss(cfg, TOKENIZER)(model, batch, update=None)
    out = model(batch.src_tokens)
    assert out.output_lengths.tolist() == [6, 8, 4]
    targets = torch.tensor([[BOS, 11, 12, EOS, 0, 0, 0, 0], [BOS, 13, 14, 14, 15, EOS, 0, 0],
                            [BOS, 16, 17, 18, 19, 20, 21, EOS]])  # fmt: skip
    n = torch.tensor([4, 6, 8])
    args = (out.logits, out.transitions, targets, out.output_lengths, n)
    want = latalign.dag_loss(*args, reduction="mean", zero_infinity=True, from_logits=True)
    per = latalign.dag_loss(*args, reduction="none", from_logits=True)
    assert stats["ntokens"] == 18 and stats["nsentences"] == 3
    torch.testing.assert_close(loss / stats["ntokens"], want)
    assert math.isinf(per[2]) and math.isfinite(float(loss))
    torch.testing.assert_close(want, (per[0] / 4 + per[1] / 6) / 3)
    # no gradient reaches the model from the third sentence
    model.zero_grad()
    DAGLoss(cfg, TOKENIZER)(model, _batch([[10, EOS]], [[16, 17, 18, 19, 20, 21]]),
                            update=None)[0].backward()  # fmt: skip
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())


# --------------------------------------------------------------------------- glancing


def test_aligner_places_the_reference_on_the_best_path() -> None:
    model = _micro(upsample=2).eval()
    batch = _batch([[5, 6, EOS], [10, EOS]], [[11, 12, 13], [16, 17, 18, 19]])
    target, n = dag_targets(batch.target, batch.target_lengths, bos_id=BOS, pad_id=PAD)
    out = model(batch.src_tokens)
    aligned = align_dag(FirstPass(out.logits, target, out.output_lengths, n, BLANK, PAD, {}, out))
    paths = latalign.dag_best_path(out.logits, out.transitions, target, out.output_lengths, n,
                                   from_logits=True)  # fmt: skip
    assert paths[0].feasible and not paths[1].feasible  # 6 tokens on 4 vertices
    want = torch.full((2, 6), PAD)
    for i, v in enumerate(paths[0].vertices):
        want[0, v] = target[0, i]
    assert torch.equal(aligned, want)
    assert ALIGNERS["dag"].align is align_dag and not ALIGNERS["dag"].skip_glanced
    # glance at ratio 1 on a model whose argmax is never a reference token: every vertex of
    # the path is fed its reference token, nothing else
    project = model._project
    model._project = lambda x: project(x).index_fill(-1, torch.tensor([UNK]), 1e4)  # type: ignore[method-assign]
    g = glance(model, batch.src_tokens, batch.src_lengths, target, n, criterion="dag",
               ratio=1.0, blank_id=BLANK, pad_id=PAD)  # fmt: skip
    assert g.distance.tolist() == [5, 0] and g.glanced.tolist() == [5, 0]
    assert torch.equal(g.tokens, want.masked_fill(want.eq(PAD), -1))


def _config(run_dir: Path, cache: Path, **kw: Any) -> TrainConfig:
    fields: dict[str, Any] = dict(
        run_dir=str(run_dir), arch="dag", criterion="dag", upsample=2,
        data=DataConfig(synthetic_size=60, synthetic_eval_size=8, vocab_size=100),
        preset="tiny", model={**MICRO, "dropout": 0.1}, max_tokens=400, warmup_updates=2,
        lr=1e-2, validate_every=1000, log_every=1, cache_dir=str(cache), device="cpu",
    )  # fmt: skip
    fields.update(kw)
    return TrainConfig(**fields)


def _losses(result: Any) -> list[float]:
    return [r["train_loss"] for r in result.history if r["kind"] == "train"]


def test_glancing_ratio_zero_is_no_glancing_bit_for_bit(tmp_path: Path, one_thread: None) -> None:
    cache = tmp_path / "cache"
    plain = train(_config(tmp_path / "plain", cache, max_updates=3), progress=False)
    zero = train(_config(tmp_path / "zero", cache, max_updates=3, glat_ratio=0.0),
                 progress=False)  # fmt: skip
    glat = train(_config(tmp_path / "glat", cache, max_updates=3, glat_ratio=0.5),
                 progress=False)  # fmt: skip
    assert _losses(zero) == _losses(plain)
    a, b, c = (torch.load(r.last_checkpoint, weights_only=False)["model"]
               for r in (plain, zero, glat))  # fmt: skip
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0)
    assert any(not torch.equal(c[k], v) for k, v in a.items())
    records = [r for r in glat.history if r["kind"] == "train"]
    assert all(r["train_glanced"] > 0 for r in records)
    assert all("train_glanced" not in r for r in plain.history)


# --------------------------------------------------------------------------- decoding


def _python_decode(logits: Tensor, tr: Tensor, length: int, lookahead: bool) -> list[int]:
    """DA-T's greedy / lookahead decoding of one graph, one step at a time in Python."""
    lp = logits.log_softmax(-1)
    best = [max(range(lp.size(1)), key=lambda y: (float(lp[v, y]), -y)) for v in range(length)]
    u, path = 0, [0]
    while u != length - 1:
        cands = list(range(u + 1, length))
        score = [float(tr[u, v]) + (float(lp[v, best[v]]) if lookahead else 0.0) for v in cands]
        u = cands[score.index(max(score))]  # the first maximum: the smallest v
        path.append(u)
    out, prev = [], None
    for v in path:
        if best[v] != prev and best[v] not in (PAD, BOS, EOS, BLANK):
            out.append(best[v])
        prev = best[v]
    return out


class _Fixed(nn.Module):
    """A stand-in model that returns given outputs (and records the mode it ran in)."""

    def __init__(self, out: DAGOutput) -> None:
        super().__init__()
        self.out, self.modes = out, []

    def forward(self, src_tokens: Tensor) -> DAGOutput:
        self.modes.append(self.training)
        return self.out


@pytest.mark.parametrize("strategy", ["greedy", "lookahead"])
def test_decoding_matches_a_python_walk(strategy: str) -> None:
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        b, length, vocab = 5, 9, 8  # a small vocabulary: repeats and specials are frequent
        lengths = torch.randint(1, length + 1, (b,), generator=gen)
        lengths[0] = length
        logits = torch.randn(b, length, vocab, generator=gen) * 2
        tr = dag_transitions(torch.randn(b, length, length, generator=gen) * 2, lengths)
        out = DAGOutput(logits, lengths, None, tr)
        model = _Fixed(out).train()
        got = dag_decode(model, torch.zeros(b, 2, dtype=torch.long), strategy=strategy)
        assert model.modes == [False] and model.training  # eval for the call, then back
        for row in range(b):
            want = _python_decode(logits[row], tr[row], int(lengths[row]), strategy == "lookahead")
            assert got[row] == want, (trial, row)
        # the walk itself: strictly increasing, from 0 to the last vertex
        best = logits.log_softmax(-1).max(-1).values
        path = dag_walk(dag_next_vertices(tr, best, strategy=strategy), lengths)
        for row in range(b):
            p = [v for v in path[row].tolist() if v >= 0]
            assert p[0] == 0 and p[-1] == int(lengths[row]) - 1
            assert all(x < y for x, y in zip(p, p[1:]))


def test_greedy_and_lookahead_differ_where_the_token_scores_decide() -> None:
    """Vertex 1 is the likelier step but its best token is unlikely: lookahead skips it."""
    logits = torch.zeros(1, 3, 8)
    logits[0, 0, 5] = 9.0  # vertex 0 says 5, vertex 2 says 7, both confidently
    logits[0, 1, 6] = 0.5  # vertex 1 says 6 with probability 0.19
    logits[0, 2, 7] = 9.0
    tr = torch.full((1, 3, 3), -math.inf)
    tr[0, 0, 1], tr[0, 0, 2], tr[0, 1, 2] = math.log(0.6), math.log(0.4), 0.0
    out = DAGOutput(logits, torch.tensor([3]), None, tr)
    src = torch.zeros(1, 2, dtype=torch.long)
    greedy = dag_decode(_Fixed(out), src, strategy="greedy")
    lookahead = dag_decode(_Fixed(out), src, strategy="lookahead")
    assert greedy == [[5, 6, 7]] and lookahead == [[5, 7]]


# --------------------------------------------------------------------------- end to end


def test_cli_trains_reduces_the_loss_and_decodes(
    tmp_path: Path, one_thread: None, capsys: Any
) -> None:
    run = tmp_path / "run"
    code = cli_main(["train", "--run-dir", str(run), "--arch", "dag", "--criterion", "dag",
                     "--upsample", "2", "--preset", "tiny", "--synthetic-size", "60",
                     "--synthetic-eval-size", "8", "--vocab-size", "100", "--max-tokens", "400",
                     "--max-updates", "16", "--lr", "5e-3", "--warmup-updates", "2",
                     "--log-every", "1", "--glat-ratio", "0.3", "--device", "cpu",
                     "--cache-dir", str(tmp_path / "cache"), "--no-progress"])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["step"] == 16
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    trained = load_run(run)
    assert isinstance(trained.model, DAGTransformer) and trained.model.cfg.upsample == 2
    lines = ["a b c", "d e"]
    for options in (SearchOptions(), SearchOptions(greedy=True)):
        out = trained.translate(lines, options)
        assert len(out) == 2 and all(isinstance(s, str) for s in out)
    with pytest.raises(OptionError, match="length_beam"):
        trained.batch_decoder(SearchOptions(length_beam=2))
    code = cli_main(["evaluate", "--run-dir", str(run), "--split", "test", "--device", "cpu",
                     "--json"])  # fmt: skip
    scores = json.loads(capsys.readouterr().out)
    assert code == 0 and scores["sentences"] == 8 and math.isfinite(scores["bleu"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "dag", "--criterion", "ctc"], "expected a criterion of arch 'dag'"),
        (["--arch", "ar", "--criterion", "dag"], "expected an arch among ['dag']"),
        (["--arch", "nat", "--criterion", "dag"], "expected a criterion of arch 'nat'"),
        (["--arch", "dag", "--criterion", "dag", "--upsample", "0"], "expected upsample >= 1"),
        (["--arch", "dag", "--criterion", "dag", "--length-beam", "3"], "['length_beam']"),
        (["--arch", "dag", "--criterion", "dag", "--nat-input", "x"], "nat_input copy or mask"),
        (["--arch", "dag", "--criterion", "dag", "--glat-ratio", "2"], "--glat-ratio in [0, 1]"),
    ],
)  # fmt: skip
def test_bad_options_exit_2_in_one_line(
    tmp_path: Path, capsys: Any, args: list[str], message: str
) -> None:
    base = ["train", "--run-dir", str(tmp_path / "x"), "--preset", "tiny", "--max-updates",
            "10", "--device", "cpu"]  # fmt: skip
    code = cli_main(base + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") <= 2, err
    assert not (tmp_path / "x").exists()


def test_model_refuses_other_configs() -> None:
    with pytest.raises(ValueError, match="expected length 'upsample'"):
        DAGConfig(vocab_size=24, length="predict")
    with pytest.raises(ValueError, match="expected a DAGConfig"):
        DAGTransformer(SimpleNamespace())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strategy"):
        dag_next_vertices(torch.zeros(1, 2, 2), torch.zeros(1, 2), strategy="beam")
