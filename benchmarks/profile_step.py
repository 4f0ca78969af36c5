"""Where the time goes: torch.profiler over training steps and beam-5 decoding.

Prints, for each, the share of self CPU time in matrix products (addmm, mm, bmm, matmul
kernels) and the top operators, plus the matrix products' achieved GFLOP/s (FLOPs counted
by the profiler, ``with_flops=True``).

    python benchmarks/profile_step.py                       # random-init small model
    python benchmarks/profile_step.py --run-dir R           # a trained run (decoding stops at eos)
    python benchmarks/profile_step.py --run-dir R --int8    # decoding with int8 linear layers

Measured (2026-11-25, quiet 2-core CPU, the 37.15-BLEU run of
``configs/multi30k_small_40min.toml``): see the README's "Measured here".
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.config import ModelConfig, TrainConfig
from latalign.translate.data import DataConfig, prepare_data
from latalign.translate.decode import SearchOptions
from latalign.translate.loss import teacher_forced_loss
from latalign.translate.model import Transformer
from latalign.translate.optim import build_optimizer
from latalign.translate.run import TrainedRun, load_run
from latalign.translate.train import default_cache_dir, train_step

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"
GEMM = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear")
INT8_GEMM = ("quantized::linear_dynamic",)  # --int8: no FLOP count from the profiler


def summarize(title: str, prof: profile, rows: int, tokens: int = 0, sentences: int = 0) -> None:
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = [e for e in events if e.key in GEMM]
    gemm_us = sum(e.self_cpu_time_total for e in gemm)
    flops = sum(e.flops for e in gemm)
    int8_us = sum(e.self_cpu_time_total for e in events if e.key in INT8_GEMM)
    print(f"\n== {title}: {total / 1e6:.2f} s self CPU")
    if int8_us:
        print(f"int8 linear layers: {100 * int8_us / total:.0f}% of the time")
    print(
        f"matrix products: {100 * gemm_us / total:.0f}% of the time, "
        f"{flops / max(gemm_us, 1) / 1e3:.0f} GFLOP/s, {flops / 1e9:.0f} GFLOP in all"
        + (f", {flops / tokens / 1e6:.0f} MFLOP per target token" if tokens else "")
        + (f", {flops / sentences / 1e6:.0f} MFLOP per sentence" if sentences else "")
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Multi30k directory")
    p.add_argument("--run-dir", type=Path, default=None, help="trained run (model + tokenizer)")
    p.add_argument("--steps", type=int, default=3, help="profiled training steps (default 3)")
    p.add_argument("--sentences", type=int, default=128, help="profiled beam-5 sentences")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--rows", type=int, default=12, help="operators listed per table")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--int8", action="store_true", help="profile decoding with quantize_int8")
    args = p.parse_args()
    torch.set_flush_denormal(True)

    cfg = DataConfig(data=str(args.data), src="de", tgt="en", vocab_size=8000)
    data = prepare_data(cfg, args.cache_dir or default_cache_dir())
    if args.run_dir is not None:
        run = load_run(args.run_dir)
    else:
        torch.manual_seed(1)
        model = Transformer(ModelConfig.preset("small", data.tokenizer.vocab_size))
        run = TrainedRun(model, data.tokenizer, TrainConfig(preset="small"))
    model, tokenizer = run.model, run.tokenizer
    sampler = TokenBatchSampler(
        data.train.src_sizes, data.train.tgt_sizes, max_tokens=args.max_tokens, seed=1
    )
    batches = []
    for indices in sampler:
        batches.append(collate([data.train[i] for i in indices]))
        if len(batches) == args.steps + 1:
            break
    optimizer = build_optimizer(model, lr=1e-4, betas=(0.9, 0.98), weight_decay=1e-4)
    loss_fn = teacher_forced_loss(
        "label_smoothed_ce", {"epsilon": 0.1}, blank_id=tokenizer.blank_id
    )
    train_step(model, optimizer, batches[0], loss_fn)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for batch in batches[1:]:
            train_step(model, optimizer, batch, loss_fn)
    ntokens = sum(b.ntokens for b in batches[1:])
    summarize(f"training, {args.steps} steps of {args.max_tokens} tokens", prof, args.rows, ntokens)

    test = next(args.data.glob("test_2016_flickr.de*"), None) or next(args.data.glob("test.de*"))
    opener = gzip.open if test.suffix == ".gz" else open
    with opener(test, "rt", encoding="utf-8") as f:
        src = [line.strip() for _, line in zip(range(args.sentences), f)]
    model.eval()
    search = SearchOptions(int8=args.int8, device="cpu", bf16=False)  # beam 5, batch 64
    run.translate(src[:16], search)  # warm-up (and the int8 copy, made once)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        run.translate(src, search)
    what = "int8" if args.int8 else "fp32"
    summarize(
        f"beam-5 decoding ({what}), {len(src)} sentences", prof, args.rows, sentences=len(src)
    )


if __name__ == "__main__":
    main()
