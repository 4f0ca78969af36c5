"""Decoding speed: beam 5 with and without the decoder cache, greedy; fp32, int8, bf16 autocast.

Decodes the first ``--sentences`` German sentences of Multi30k test_2016_flickr with the
``small`` preset and prints sentences/s of each decoder. Its baselines run in the same run:
int8 and bf16 are compared with fp32, the cached beam search with the uncached one. For
fairseq's speed on the same machine, ``benchmarks/fairseq_anchor.sh`` trains both toolkits
the same way and decodes with both (it calls this script for latalign's side).

    python benchmarks/bench_decode.py                       # random-init small model
    python benchmarks/bench_decode.py --run-dir runs/ce     # a trained model (+ its tokenizer)
    python benchmarks/bench_decode.py --checkpoint ckpt.pt --tokenizer runs/ce/tokenizer

Without a checkpoint the model is randomly initialised. A random model rarely emits eos, so
every sentence would run to the length cap; the benchmark therefore decodes a fixed number of
steps (``--fixed-len``, default 16 ~ the mean target length in tokens: every output has
exactly that many tokens) so that the timings compare like with like. ``--fixed-len`` applies
to a trained model too when given (``benchmarks/fairseq_anchor.sh`` uses it so that two
differently trained models do the same work). Without a checkpoint the source side is
tokenised by hashing words into the vocabulary unless ``--tokenizer`` names a trained tokenizer
folder. Timings exclude tokenisation.

A trained model stops at eos; a few minutes of training give one (quality aside, it emits
eos), e.g.

    latalign train --run-dir /tmp/bench_ce --preset small --criterion ce --lr 1e-3 \
        --warmup-updates 40 --max-minutes 4 --no-progress
    python benchmarks/bench_decode.py --run-dir /tmp/bench_ce --skip-bf16 --skip-uncached

With a trained model and the English references beside ``--data``, each row gets its
sacreBLEU. int8 (``--skip-int8`` to leave it out): ``latalign.translate.quantize``, see
``docs/decoding.md``.

NAT rows (``docs/nat.md``): the same sentences decoded in one pass by non-autoregressive
models, timed in the same interleaved rounds, with a ``vs beam`` column (speed over the
AR beam row of this run; issue 10's goal is >= 10x). With a random-init AR model two random-init
``small`` NAT models are added (CTC collapse at 2 x the source length; length beam 3 of a
length predictor); with trained models give ``--nat-run-dir`` (repeatable), each decoded with
its own tokenizer and scored with BLEU like the AR rows. ``--skip-nat`` leaves them out:

    python benchmarks/bench_decode.py --run-dir runs/m30k-ce \
        --nat-run-dir runs/nat_ctc --nat-run-dir runs/nat_axe --skip-bf16 --skip-int8

Timings are medians of ``--repeats`` interleaved passes (default 3); the load average is printed
before and after. ``python benchmarks/profile_step.py`` (torch.profiler) shows where beam
search spends its time (matrix products, topk, log_softmax).

On a CPU without bf16 instructions (AVX2 only) the bf16 autocast rows are expected to be
slower than fp32; they are measured to keep that decision checkable.

On a shared machine (load above the core count) the default OpenMP threads spin-wait for
each other and lose much of their time: use ``--threads 1`` there, or ``OMP_WAIT_POLICY=PASSIVE``
in the shell (before torch is imported). The header prints the thread count, the policy and
the load average.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.decode import BatchDecoder, _collate_sources, beam_search, greedy_decode
from latalign.translate.model import Transformer
from latalign.translate.nat import NATConfig, NATransformer
from latalign.translate.quantize import quantize_int8
from latalign.translate.run import TrainedRun, load_run
from latalign.translate.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
EOS_ID, PAD_ID = 2, 0


def read_sentences(path: Path, k: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return lines[:k]


def hash_encoder(vocab_size: int) -> Callable[[str], list[int]]:
    """Word-level stand-in tokeniser: words and punctuation hashed into ids 5..V-1."""

    def encode(text: str) -> list[int]:
        words = re.findall(r"\w+|[^\w\s]", text)
        return [5 + zlib.crc32(w.encode()) % (vocab_size - 5) for w in words]

    return encode


Decoder = Callable[[list[int]], str]


def load(
    args: argparse.Namespace,
) -> tuple[Transformer, Callable[[str], list[int]], Decoder | None, str]:
    """The model, the source encoder, a detokeniser for trained models (ε removed) and a label."""
    if args.run_dir or args.checkpoint:
        if args.tokenizer is None:
            run = load_run(args.run_dir or args.checkpoint)
            model, tok = run.model, run.tokenizer
        else:
            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
            model = Transformer(ModelConfig(**state["model_config"]))
            model.load_state_dict(state["model"])
            tok = Tokenizer.load(args.tokenizer)

        def decode(ids: list[int]) -> str:
            return tok.decode([i for i in ids if i != tok.blank_id])

        return model.eval(), tok.encode, decode, "trained model"
    torch.manual_seed(0)
    if args.tokenizer:
        tok = Tokenizer.load(args.tokenizer)
        vocab, encode = tok.vocab_size, tok.encode
    else:
        vocab, encode = args.vocab_size, hash_encoder(args.vocab_size)
    model = Transformer(ModelConfig.preset("small", vocab)).eval()
    label = f"RANDOM-INIT model (vocab {vocab}), fixed length {args.fixed_len or 16}"
    return model, encode, None, label


def references(source: Path, k: int) -> list[str] | None:
    """The first ``k`` English references beside a German source file, if there are any."""
    name = source.name.replace(".de", ".en")
    path = source.with_name(name)
    return read_sentences(path, k) if name != source.name and path.is_file() else None


def corpus_bleu(outputs: list[list[int]], refs: list[str], decode: Decoder) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu([decode(o) for o in outputs], [refs]).score


def make_batches(
    ids: list[list[int]], batch_size: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
    """Sort by length (as translate_sentences does) and collate into (B, S) batches; also
    returns, for each input sentence, its position in the sorted order."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [
        _collate_sources([ids[i] for i in order[s : s + batch_size]], PAD_ID, "cpu")
        for s in range(0, len(order), batch_size)
    ]
    inverse = [0] * len(order)
    for pos, i in enumerate(order):
        inverse[i] = pos
    return batches, inverse


def run_once(fn: Callable[..., list[list[int]]], model, batches, **kwargs):
    """Wall time (s) of one pass over ``batches`` and its outputs."""
    outputs: list[list[int]] = []
    start = time.perf_counter()
    for src, lengths in batches:
        outputs.extend(fn(model, src, lengths, **kwargs))
    return time.perf_counter() - start, outputs


def nat_decoders(
    args: argparse.Namespace, trained: bool, vocab: int, encode: Callable[[str], list[int]]
) -> list[tuple[str, torch.nn.Module, Callable[[str], list[int]], Decoder | None, BatchDecoder]]:
    """``(row name, NAT model, source encoder, detokeniser or None, batch decoder)``: the runs
    of ``--nat-run-dir`` (decoded by their own rule, ``TrainedRun.batch_decoder``), or two
    random-init ``small`` NAT models beside a random AR model (none beside a trained AR model
    without ``--nat-run-dir``, or with ``--skip-nat``)."""
    if args.skip_nat:
        return []
    out = []
    if args.nat_run_dir:
        for run_dir in args.nat_run_dir:
            run = load_run(run_dir)
            if run.arch.autoregressive:
                raise SystemExit(f"bench_decode: expected a NAT run in {run_dir}; found an AR run")
            cfg, tok = run.model.cfg, run.tokenizer
            how = (
                f"{run.config.criterion} x{cfg.upsample}"
                if cfg.length == "upsample"
                else f"len-beam {cfg.length_beam}"
            )

            def detok(x: list[int], tok: Any = tok) -> str:
                return tok.decode([i for i in x if i != tok.blank_id])

            name = f"nat {how} {Path(run_dir).name}"
            if any(name == other for other, *_ in out):  # rows are keyed by name
                name = f"{name} ({len(out) + 1})"
            out.append((name, run.model, tok.encode, detok, run.batch_decoder()))
        return out
    if trained:
        return []
    base = ModelConfig.preset("small", vocab).to_dict()
    ids = SimpleNamespace(pad_id=PAD_ID, bos_id=1, eos_id=EOS_ID, blank_id=4)
    for name, criterion in (("nat ctc x2 fp32", "ctc"), ("nat len-beam 3 fp32", "ce")):
        cfg = TrainConfig(arch="nat", criterion=criterion, preset="small")
        torch.manual_seed(0)
        model = NATransformer(NATConfig.from_model_config(ModelConfig(**base), **{
            "length": "upsample" if criterion == "ctc" else "predict"})).eval()  # fmt: skip
        out.append((name, model, encode, None, TrainedRun(model, ids, cfg).batch_decoder()))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sentences", type=int, default=200, help="first K sentences (default 200)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder")
    p.add_argument("--vocab-size", type=int, default=10000, help="random model only")
    p.add_argument(
        "--fixed-len", type=int, default=None,
        help="every output exactly N tokens (min = max length); default: 16 for a random "
        "model, a trained model stops at eos (max 1.2 x source + 10)",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; median")
    p.add_argument("--skip-uncached", action="store_true")
    p.add_argument("--skip-bf16", action="store_true")
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--nat-run-dir", type=Path, action="append", default=[],
        help="a trained NAT run to time beside the AR rows (repeatable)",
    )  # fmt: skip
    p.add_argument("--skip-nat", action="store_true", help="no NAT rows")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model, encode, decode, what = load(args)
    sentences = read_sentences(args.data, args.sentences)
    ids = [encode(s) + [EOS_ID] for s in sentences]
    batches, inverse = make_batches(ids, args.batch_size)
    n = len(ids)
    trained = decode is not None  # a trained model comes with its tokenizer
    nat = nat_decoders(args, trained, model.cfg.vocab_size, encode)
    if args.fixed_len is None and not trained:
        args.fixed_len = 16
    lengths = (
        dict(max_len_a=1.2, max_len_b=10)
        if args.fixed_len is None
        else dict(max_len_a=0.0, max_len_b=args.fixed_len, min_len=args.fixed_len)
    )
    print(
        f"# {what}; {n} sentences of {args.data.name}, mean source length "
        f"{sum(map(len, ids)) / n:.1f} tokens; batch {args.batch_size}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{model.num_parameters() / 1e6:.1f}M parameters"
    )
    load1, load5, _ = os.getloadavg()
    print(
        f"# load average {load1:.1f} (1 min) {load5:.1f} (5 min) on {os.cpu_count()} CPUs: "
        "timings on a shared machine scale with it; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    if not trained:
        print("# NOTE: random weights; outputs are meaningless, only the speed comparison is.")
    if args.fixed_len is not None:
        print(f"# every output has exactly {args.fixed_len} tokens (+ eos): --fixed-len")

    rows = []
    results: dict[str, list[list[int]]] = {}
    int8_model = None
    if not args.skip_int8:
        int8_model = quantize_int8(model)
    configs = [
        ("beam", "cached", "fp32"),
        ("beam", "cached", "int8"),
        ("beam", "cached", "bf16"),
        ("beam", "uncached", "fp32"),
        ("greedy", "cached", "fp32"),
        ("greedy", "cached", "int8"),
        ("greedy", "cached", "bf16"),
    ]
    runs = []
    for kind, cache, precision in configs:
        if (
            (cache == "uncached" and args.skip_uncached)
            or (precision == "bf16" and args.skip_bf16)
            or (precision == "int8" and args.skip_int8)
        ):
            continue
        kwargs = dict(use_cache=cache == "cached", autocast_bf16=precision == "bf16", **lengths)
        if kind == "beam":
            fn, kwargs["beam"] = beam_search, args.beam
        else:
            fn = greedy_decode
        m = int8_model if precision == "int8" else model
        name = f"{kind}{'-' + str(args.beam) if kind == 'beam' else ''} {cache} {precision}"
        fn(m, *batches[0], **kwargs)  # warm-up
        runs.append((name, fn, m, kwargs, batches, inverse, decode))
    for name, m, nat_encode, nat_detok, nat_decode in nat:
        nat_batches, nat_inverse = make_batches(
            [nat_encode(x) + [EOS_ID] for x in sentences], args.batch_size
        )
        nat_decode(m, *nat_batches[0])  # warm-up
        runs.append((name, nat_decode, m, {}, nat_batches, nat_inverse, nat_detok))
    # interleaved repeats (config order reversed every other round), median per config:
    # on a shared machine the load drifts, and interleaving spreads it over every config
    times: dict[str, list[float]] = {name: [] for name, *_ in runs}
    for r in range(args.repeats):
        for name, fn, m, kwargs, bs, _, _ in runs if r % 2 == 0 else runs[::-1]:
            seconds, results[name] = run_once(fn, m, bs, **kwargs)
            times[name].append(seconds)
    refs = references(args.data, args.sentences) if trained else None
    b = f"beam-{args.beam}"
    beam_time = statistics.median(times[f"{b} cached fp32"])
    for name, _, _, _, _, inv, detok in runs:
        seconds = statistics.median(times[name])
        base = f"{name.split(' ', 1)[0]} cached fp32"  # the same search, cached fp32, this run
        vs = statistics.median(times[base]) / seconds if base in times else float("nan")
        out = [results[name][i] for i in inv]  # back to corpus order
        ok = refs is not None and detok is not None
        bleu = corpus_bleu(out, refs, detok) if ok else float("nan")
        rows.append((name, n / seconds, vs, beam_time / seconds, sum(map(len, out)) / n, bleu))

    # out len: output tokens per sentence, eos excluded; vs fp32: speed over the cached fp32 row
    # of the same search (beam or greedy) in this run; vs beam: over the cached fp32 beam row
    width = max(28, *(len(name) for name, *_ in rows))
    print(
        f"{'decoder':{width}s} {'sent/s':>8s} {'out len':>8s} {'BLEU':>6s} {'vs fp32':>8s} "
        f"{'vs ' + b:>10s}"
    )
    for name, speed, vs, vs_beam, out_len, bleu in rows:
        print(f"{name:{width}s} {speed:8.1f} {out_len:8.1f} {bleu:6.2f} {vs:7.2f}x {vs_beam:9.2f}x")
    print(f"# median of {args.repeats} interleaved repeats; load average now {os.getloadavg()}")
    nat_names = {name for name, *_ in nat}
    for name, _, _, vs_beam, _, _ in rows:
        if name in nat_names:
            print(f"# {name}: {vs_beam:.1f}x the sentences/s of AR {b} (cached fp32), goal >= 10x")
    if f"{b} uncached fp32" in results:
        same = results[f"{b} cached fp32"] == results[f"{b} uncached fp32"]
        print(f"# cached == uncached outputs (beam {args.beam}, fp32): {same}")
    for kind in (b, "greedy"):
        for precision in ("bf16", "int8"):
            other = results.get(f"{kind} cached {precision}")
            if other is not None:
                same = sum(x == y for x, y in zip(results[f"{kind} cached fp32"], other))
                print(f"# {kind}: {precision} outputs identical to fp32 for {same}/{n} sentences")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
