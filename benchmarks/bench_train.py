"""Training throughput: target tokens/s of CE vs AXE, fp32 vs bf16 autocast, same run.

Same ``small`` model, Multi30k de-en (joint BPE 8000), ``max_tokens`` 4096, the same batches
for every setting; ``--warmup`` updates are not timed, then ``--updates`` are. Prints a table,
the AXE/CE ratio, the ratio to fairseq's 2,574 target tokens/s (the bar: >= 2x fairseq,
AXE >= 0.9x CE) and peak resident memory (``ru_maxrss``).

    python benchmarks/bench_train.py                    # fp32 CE + AXE, ~2-3 minutes, 2 cores
    python benchmarks/bench_train.py --precisions fp32,bf16 --warmup 1 --updates 3
    python benchmarks/bench_train.py --criteria ce_unfused,ce,lsce_unfused,label_smoothed_ce,axe

The last one compares the fused cross entropies with their unfused baselines (F.cross_entropy;
fairseq's log_softmax + gather + sum): on 2026-11-25 (load ~2, a slower day: CE 1,332 tok/s)
fused / unfused was 1.03 for CE and 1.00 for label-smoothed CE, AXE/CE 1.01.

Measured on the 2-core dev CPU (quiet, torch 2.13, defaults, 2026-11-25): fp32 CE 1,608,
AXE 1,529 target tokens/s (AXE/CE 0.95, 0.62x fairseq), peak RSS 2.1 GB. An earlier day
(--warmup 1 --updates 3) gave CE 2,055 and AXE 2,160: the machine's speed varies, compare
ratios within one run. bf16 CE 56 tokens/s (no native bf16 on that CPU: ~37x slower), hence
bf16 off by default here and in TrainConfig.
    python benchmarks/bench_train.py --updates 30 --warmup 5 --threads 2

On the shared machine (load 3-9 from other jobs) the default 2 OpenMP threads spin-wait for each
other and lose most of their time: measured in one process with interleaved steps, CE training
563 tok/s with 2 threads vs 1,125 with 1 thread; with ``OMP_WAIT_POLICY=PASSIVE`` (must be set
before torch is imported, i.e. in the shell) 2 threads gave 1,132. Beam 5 (random model):
5.8 sent/s with 2 threads, 48 with 1, 44 with 2 threads and PASSIVE. The header prints the policy.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.config import ModelConfig
from latalign.translate.criteria import get_criterion
from latalign.translate.criteria._common import make_stats
from latalign.translate.data import DataConfig, prepare_data
from latalign.translate.loss import teacher_forced_loss
from latalign.translate.model import Transformer
from latalign.translate.optim import build_optimizer
from latalign.translate.train import default_cache_dir, train_step

FAIRSEQ_TOKENS_PER_S = 2574.0
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def ce_unfused(logits, batch, blank_id: int, pad_id: int):
    """Baseline: ``F.cross_entropy`` (log_softmax + nll_loss), the criterion before fusing."""
    import torch.nn.functional as F

    x = logits.float().reshape(-1, logits.size(-1))
    loss = F.cross_entropy(x, batch.target.reshape(-1), ignore_index=pad_id, reduction="sum")
    return loss, make_stats(loss, batch, nll_loss_sum=loss)


def label_smoothed_ce_unfused(logits, batch, blank_id: int, pad_id: int):
    """Baseline: fairseq's log_softmax + gather + sum label smoothing (epsilon 0.1)."""
    from latalign.translate.criteria import label_smoothed_nll_loss

    lprobs = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.size(-1))
    loss, nll = label_smoothed_nll_loss(lprobs, batch.target.reshape(-1), 0.1, pad_id)
    return loss, make_stats(loss, batch, nll_loss_sum=nll)


#: benchmark-only baselines, beside the library's criteria
BASELINES = {"ce_unfused": ce_unfused, "lsce_unfused": label_smoothed_ce_unfused}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure(
    criterion_name: str, bf16: bool, batches: list, vocab_size: int, args: argparse.Namespace
) -> float:
    """Target tokens/s over ``args.updates`` timed updates (after ``args.warmup``)."""
    torch.manual_seed(args.seed)
    model = Transformer(ModelConfig.preset(args.preset, vocab_size))
    optimizer = build_optimizer(model, lr=args.lr, betas=(0.9, 0.98), weight_decay=1e-4)
    criterion = BASELINES.get(criterion_name) or get_criterion(criterion_name)
    loss_fn = teacher_forced_loss(criterion, {}, blank_id=4, pad_id=0)
    for batch in batches[: args.warmup]:
        train_step(model, optimizer, batch, loss_fn, bf16=bf16)
    timed = batches[args.warmup : args.warmup + args.updates]
    tokens = sum(b.ntokens for b in timed)
    start = time.perf_counter()
    for batch in timed:
        train_step(model, optimizer, batch, loss_fn, bf16=bf16)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Multi30k directory")
    p.add_argument("--preset", default="small", help="model preset (default: small)")
    p.add_argument("--vocab-size", type=int, default=8000, help="joint BPE size (default: 8000)")
    p.add_argument("--max-tokens", type=int, default=4096, help="batch budget (default: 4096)")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates per setting")
    p.add_argument("--updates", type=int, default=10, help="timed updates per setting")
    p.add_argument(
        "--criteria", default="ce,axe",
        help="comma separated criteria (default: ce,axe); also the baselines "
        f"{', '.join(BASELINES)} (the cross entropies before fusing)",
    )  # fmt: skip
    p.add_argument(
        "--precisions", default="fp32", help="fp32 and/or bf16, comma separated (default: fp32)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--lr", type=float, default=5e-4, help="constant lr (no warm-up here)")
    p.add_argument("--seed", type=int, default=1, help="seed of model init and batch order")
    p.add_argument("--cache-dir", type=Path, default=None, help="data cache directory")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = DataConfig(data=str(args.data), src="de", tgt="en", vocab_size=args.vocab_size)
    data = prepare_data(cfg, args.cache_dir or default_cache_dir())
    sampler = TokenBatchSampler(
        data.train.src_sizes, data.train.tgt_sizes, max_tokens=args.max_tokens, seed=args.seed
    )
    need = args.warmup + args.updates
    batches = []
    for indices in sampler:
        batches.append(collate([data.train[i] for i in indices]))
        if len(batches) == need:
            break
    print(
        f"# preset={args.preset} vocab={data.tokenizer.vocab_size} max_tokens={args.max_tokens} "
        f"warmup={args.warmup} timed_updates={args.updates} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} loadavg={os.getloadavg()} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(f"{'criterion':<17} {'precision':<9} {'tgt tok/s':>10} {'x fairseq':>9} {'peak MiB':>9}")
    results: dict[tuple[str, str], float] = {}
    for precision in args.precisions.split(","):
        for name in args.criteria.split(","):
            tps = measure(name, precision == "bf16", batches, data.tokenizer.vocab_size, args)
            results[(name, precision)] = tps
            print(
                f"{name:<17} {precision:<9} {tps:>10.0f} {tps / FAIRSEQ_TOKENS_PER_S:>9.2f} "
                f"{peak_rss_mib():>9.0f}",
                flush=True,
            )
    for precision in args.precisions.split(","):
        if ("ce", precision) in results and ("axe", precision) in results:
            ratio = results[("axe", precision)] / results[("ce", precision)]
            print(f"AXE/CE ({precision}) = {ratio:.2f}  (bar: >= 0.9)")
    for fused, unfused in (("ce", "ce_unfused"), ("label_smoothed_ce", "lsce_unfused")):
        for precision in args.precisions.split(","):
            if (fused, precision) in results and (unfused, precision) in results:
                ratio = results[(fused, precision)] / results[(unfused, precision)]
                print(f"{fused} fused / unfused ({precision}) = {ratio:.2f}")
    for name in args.criteria.split(","):
        if (name, "fp32") in results and (name, "bf16") in results:
            speed = results[(name, "bf16")] / results[(name, "fp32")]
            print(f"bf16/fp32 ({name}) = {speed:.2f}")
    best = max(results.values())
    print(
        f"best / fairseq {FAIRSEQ_TOKENS_PER_S:.0f} tok/s = {best / FAIRSEQ_TOKENS_PER_S:.2f}  (bar: >= 2)"
    )
    print(f"peak RSS = {peak_rss_mib():.0f} MiB; load average now {os.getloadavg()}")


if __name__ == "__main__":
    main()
