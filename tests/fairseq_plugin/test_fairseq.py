"""The plugin inside fairseq: registration, the criteria against latalign's losses on a real
fairseq model and task, the archs' lengths and transitions, one-pass decoding.

Runs only where fairseq is importable (not in CI: fairseq is an optional, heavy dependency).
Run it in fairseq's venv: ``bash benchmarks/fairseq_plugin.sh`` makes one; then
``$FAIRSEQ_VENV/bin/pip install pytest hypothesis`` and ``$FAIRSEQ_VENV/bin/python -m pytest
tests/fairseq_plugin``.
"""

from __future__ import annotations

import math
from argparse import Namespace
from pathlib import Path

import pytest
import torch

fairseq = pytest.importorskip("fairseq")

from fairseq import options, tasks, utils  # noqa: E402

import latalign as la  # noqa: E402

PLUGIN = Path(__file__).resolve().parents[2] / "src" / "latalign" / "fairseq_plugin"
VOCAB = 30  # pieces besides fairseq's 4 specials


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dicts")
    lines = "".join(f"w{i} 1\n" for i in range(VOCAB))
    for lang in ("de", "en"):
        (d / f"dict.{lang}.txt").write_text(lines, encoding="utf-8")
    return d


def setup(data_dir: Path, arch: str, criterion: str, *extra: str):
    """fairseq's own parser, task, model and criterion, as fairseq-train builds them."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [
            str(data_dir),
            "--user-dir",
            str(PLUGIN),
            "--task",
            "translation_lev",
            "--noise",
            "full_mask",
            "-s",
            "de",
            "-t",
            "en",
            "--arch",
            arch,
            "--criterion",
            criterion,
            "--encoder-layers",
            "1",
            "--decoder-layers",
            "1",
            "--encoder-embed-dim",
            "16",
            "--decoder-embed-dim",
            "16",
            "--encoder-ffn-embed-dim",
            "32",
            "--decoder-ffn-embed-dim",
            "32",
            "--encoder-attention-heads",
            "2",
            "--decoder-attention-heads",
            "2",
            "--share-all-embeddings",
            "--src-embedding-copy",
            "--dropout",
            "0",
            "--cpu",
            *extra,
        ],
    )
    torch.manual_seed(0)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    crit = task.build_criterion(args)
    return args, task, model.double(), crit


def make_sample(task, src_len=(5, 3), sentences=((7, 8, 9), (10, 10, 11, 12))):
    """A padded fairseq batch: src ``w… eos``, target ``bos y… eos`` (translation_lev)."""
    d = task.target_dictionary
    pad, bos, eos = d.pad(), d.bos(), d.eos()
    g = torch.Generator().manual_seed(5)
    n = len(src_len)
    src = torch.full((n, max(src_len)), pad)
    for b, s in enumerate(src_len):
        src[b, : s - 1] = torch.randint(4, 4 + VOCAB, (s - 1,), generator=g)
        src[b, s - 1] = eos
    width = max(len(s) for s in sentences) + 2
    tgt = torch.full((n, width), pad)
    for b, s in enumerate(sentences):
        tgt[b, : len(s) + 2] = torch.tensor([bos, *s, eos])
    return {
        "net_input": {"src_tokens": src, "src_lengths": torch.tensor(src_len)},
        "target": tgt,
        "prev_target": task.inject_noise(tgt),
        "ntokens": int(tgt.ne(pad).sum()),
        "nsentences": n,
    }


def sentence_batch(sentences, pad):
    n = torch.tensor([len(s) for s in sentences])
    targets = torch.full((len(sentences), int(n.max())), pad)
    for b, s in enumerate(sentences):
        targets[b, : len(s)] = torch.tensor(s)
    return targets, n


def test_registered_once_even_when_imported_twice():
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.models import ARCH_MODEL_REGISTRY

    utils.import_user_module(Namespace(user_dir=str(PLUGIN)))
    utils.import_user_module(Namespace(user_dir=str(PLUGIN)))
    import latalign.fairseq_plugin  # noqa: F401  (the package name as well)

    assert {"latalign_ctc", "latalign_axe", "latalign_dag"} <= set(CRITERION_REGISTRY)
    assert {"latalign_nat_upsampled", "latalign_nat_dag"} <= set(ARCH_MODEL_REGISTRY)


def test_ctc_criterion_equals_latalign_and_torch(data_dir):
    args, task, model, crit = setup(
        data_dir, "latalign_nat_upsampled", "latalign_ctc", "--upsample-scale", "1.5"
    )
    sample = make_sample(task)
    loss, sample_size, log = crit(model, sample)
    d = task.target_dictionary
    sentences = [[7, 8, 9], [10, 10, 11, 12]]
    targets, n = sentence_batch(sentences, d.pad())
    out = model(
        sample["net_input"]["src_tokens"],
        sample["net_input"]["src_lengths"],
        sample["prev_target"],
        sample["target"],
    )
    lengths = torch.tensor([math.ceil(1.5 * 5), max(math.ceil(1.5 * 3), 2)])  # 8, 5
    assert out["word_ins"]["lengths"].tolist() == lengths.tolist()
    lp = out["word_ins"]["out"].log_softmax(-1)
    want = la.ctc_loss(lp, targets, lengths, n, blank=d.bos(), reduction="sum")
    ref = torch.nn.functional.ctc_loss(
        lp.transpose(0, 1), targets, lengths, n, blank=d.bos(), reduction="sum"
    )
    assert torch.allclose(loss, want) and torch.allclose(loss, ref)
    assert sample_size == 7 and log["sample_size"] == 7 and log["nsentences"] == 2
    assert log["infeasible"] == 0 and torch.allclose(log["ctc"], want)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_ctc_infeasible_sentence_is_zero_and_counted(data_dir):
    # λ = 1: L = S = 5 and 3; the second sentence (4 tokens, one repeat) needs 5 positions
    args, task, model, crit = setup(
        data_dir, "latalign_nat_upsampled", "latalign_ctc", "--upsample-scale", "1"
    )
    sample = make_sample(task)
    loss, _, log = crit(model, sample)
    assert log["infeasible"] == 1 and torch.isfinite(loss)
    _, _, _, strict = setup(
        data_dir,
        "latalign_nat_upsampled",
        "latalign_ctc",
        "--upsample-scale",
        "1",
        "--no-zero-infinity",
    )
    assert torch.isinf(strict(model, sample)[0])


def test_axe_criterion_on_fairseqs_nat_with_length_term(data_dir):
    args, task, model, crit = setup(
        data_dir,
        "nonautoregressive_transformer",
        "latalign_axe",
        "--delta",
        "0.5",
        "--length-loss-factor",
        "0.25",
    )
    sample = make_sample(task)
    loss, sample_size, log = crit(model, sample)
    d = task.target_dictionary
    targets, n = sentence_batch([[7, 8, 9], [10, 10, 11, 12]], d.pad())
    out = model(
        sample["net_input"]["src_tokens"],
        sample["net_input"]["src_lengths"],
        sample["prev_target"],
        sample["target"],
    )
    m = sample["prev_target"].ne(d.pad()).sum(1)  # bos … eos: n + 2 positions
    assert m.tolist() == [5, 6]
    axe = la.axe_loss(
        out["word_ins"]["out"],
        targets,
        m,
        n,
        blank=d.bos(),
        delta=0.5,
        reduction="sum",
        from_logits=True,
    )
    length_nll = torch.nn.functional.cross_entropy(
        out["length"]["out"], out["length"]["tgt"], reduction="sum"
    )
    want = axe + 0.25 * length_nll * 7 / 2
    assert torch.allclose(log["axe"], axe) and torch.allclose(loss, want)
    assert sample_size == 7


def test_blank_in_targets_is_refused(data_dir):
    _, task, model, crit = setup(
        data_dir, "latalign_nat_upsampled", "latalign_ctc", "--blank-symbol", "w3"
    )
    blank = task.target_dictionary.index("w3")
    sample = make_sample(task, sentences=((7, blank, 9), (10, 11)))
    with pytest.raises(ValueError, match="expected targets without the blank 'w3'"):
        crit(model, sample)


def test_unknown_blank_symbol_and_label_smoothing_are_refused(data_dir):
    with pytest.raises(ValueError, match="expected --blank-symbol in the target dictionary"):
        setup(data_dir, "latalign_nat_upsampled", "latalign_ctc", "--blank-symbol", "<blank>")
    with pytest.raises(ValueError, match="expected --label-smoothing 0"):
        setup(data_dir, "latalign_nat_upsampled", "latalign_axe", "--label-smoothing", "0.1")


def test_dag_arch_and_criterion(data_dir):
    args, task, model, crit = setup(data_dir, "latalign_nat_dag", "latalign_dag")
    assert args.upsample_scale == 4.0
    sample = make_sample(task)
    loss, sample_size, log = crit(model, sample)
    out = model(
        sample["net_input"]["src_tokens"],
        sample["net_input"]["src_lengths"],
        sample["prev_target"],
        sample["target"],
    )
    w = out["word_ins"]
    assert w["lengths"].tolist() == [20, 12]
    t = w["transitions"]
    for b, lb in enumerate(w["lengths"].tolist()):
        rows = t[b, : lb - 1, :lb].exp().sum(-1)
        assert torch.allclose(rows, torch.ones_like(rows))
        lower = torch.ones(t.size(1), t.size(1), dtype=torch.bool).tril()  # v <= u
        assert torch.isinf(t[b][lower]).all() and torch.isinf(t[b, lb - 1 :]).all()
    targets, n = sentence_batch([[7, 8, 9], [10, 10, 11, 12]], task.target_dictionary.pad())
    want = la.dag_loss(w["out"], t, targets, w["lengths"], n, reduction="sum", from_logits=True)
    assert torch.allclose(loss, want) and sample_size == 7
    loss.backward()
    assert model.link_query.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dag_criterion_needs_transitions(data_dir):
    _, task, model, crit = setup(data_dir, "latalign_nat_upsampled", "latalign_dag")
    with pytest.raises(ValueError, match="expected a model with DAG transitions"):
        crit(model, make_sample(task))


@pytest.mark.parametrize("arch", ["latalign_nat_upsampled", "latalign_nat_dag"])
def test_one_pass_decoding(data_dir, arch):
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

    _, task, model, _ = setup(data_dir, arch, "latalign_dag" if "dag" in arch else "latalign_ctc")
    model.eval()
    sample = make_sample(task)
    sample["id"] = torch.arange(2)
    gen = IterativeRefinementGenerator(task.target_dictionary, models=[model], max_iter=0)
    hypos = gen.generate([model], sample)
    d = task.target_dictionary
    for b, hyps in enumerate(hypos):
        tokens = hyps[0]["tokens"].tolist()
        assert tokens and d.pad() not in tokens
        if "dag" not in arch:  # CTC: repeats merged
            assert all(x != y for x, y in zip(tokens, tokens[1:]))
        assert len(tokens) <= model.decoder_lengths(sample["net_input"]["src_lengths"])[b]
