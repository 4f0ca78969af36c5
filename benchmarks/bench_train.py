"""Training throughput: target tokens/s of CE vs AXE, fp32 vs bf16 autocast, same run.

One model preset (``small`` by default, ``--preset paper`` for the paper's 6+6 layers, d=512),
Multi30k de-en (joint BPE 8000; ``--data synthetic`` uses the built-in synthetic corpus),
``max_tokens`` 4096, the same batches for every setting; ``--warmup`` updates are not timed,
then ``--updates`` are. Every row is compared with baselines measured in the same run:

- AXE / CE (per precision),
- bf16 autocast / fp32 (per criterion),
- the fused cross entropies / their unfused baselines (``--criteria ce_unfused,ce,...``).

Target tokens = each sentence's target pieces + eos (``Batch.ntokens``, fairseq's ``ntokens``).
The settings' updates are interleaved batch by batch (see :func:`measure`). Memory: on CUDA,
"step MiB" is what one update takes above the memory allocated before it (activations,
transients); on the CPU the process's peak resident set size (``ru_maxrss``) with every
setting's model resident. For fairseq on the same machine, run ``benchmarks/fairseq_anchor.sh``
(both toolkits train the same model in one run).

    python benchmarks/bench_train.py                              # CPU, small, fp32 CE + AXE
    python benchmarks/bench_train.py --precisions fp32,bf16 --warmup 1 --updates 3
    python benchmarks/bench_train.py --criteria ce_unfused,ce,lsce_unfused,label_smoothed_ce,axe
    python benchmarks/bench_train.py --device cuda --preset paper            # fp32 and bf16 rows
    python benchmarks/bench_train.py --device cuda --quick --json out.json   # gpu_check.sh

On CUDA every tensor (model, batches, optimizer state) lives on the device, the timed loop is
bracketed by ``torch.cuda.synchronize()``, fp32 rows use TF32 matrix products unless
``--no-tf32``, and ``--precisions`` defaults to ``fp32,bf16``. Goals on one H200 (issue 9):
AXE >= 0.95x CE and bf16 >= 1.5x fp32 with the ``paper`` preset; ``--quick`` (3 untimed + 10
timed updates per setting) is the time-boxed form that ``benchmarks/gpu_check.sh`` runs.

On the shared 2-core CPU (load 3-9 from other jobs) the default 2 OpenMP threads spin-wait
for each other and lose most of their time; use ``--threads 1`` there (or
``OMP_WAIT_POLICY=PASSIVE`` in the shell, before torch is imported). The header prints the
thread count, the policy and the load average. That CPU (AVX2, no bf16 instructions) runs
bf16 autocast many times *slower* than fp32, hence bf16 off by default on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.config import ModelConfig
from latalign.translate.criteria import label_smoothed_nll_loss
from latalign.translate.criteria._common import IGNORE, position_targets
from latalign.translate.data import DataConfig, prepare_data
from latalign.translate.loss import teacher_forced_loss
from latalign.translate.model import Transformer
from latalign.translate.optim import build_optimizer
from latalign.translate.train import default_cache_dir, train_step

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"
#: goals of issue 9 on one H200 (the CPU has no bf16 units: the bf16 goal is for CUDA only)
GOAL_AXE_OVER_CE = 0.95
GOAL_BF16_OVER_FP32 = 1.5


def ce_unfused(logits, targets, input_lengths, target_lengths, *, blank: int = 4):
    """Baseline: ``F.cross_entropy`` (log_softmax + nll_loss), the criterion before fusing."""
    x = logits.float().reshape(-1, logits.size(-1))
    rows = position_targets(logits, targets, target_lengths).reshape(-1)
    loss = F.cross_entropy(x, rows, ignore_index=IGNORE, reduction="sum")
    return loss, loss


def label_smoothed_ce_unfused(logits, targets, input_lengths, target_lengths, *, blank: int = 4):
    """Baseline: fairseq's log_softmax + gather + sum label smoothing (epsilon 0.1)."""
    lprobs = torch.log_softmax(logits.float(), dim=-1).reshape(-1, logits.size(-1))
    rows = position_targets(logits, targets, target_lengths).reshape(-1)
    pad = 0  # never a target: stands for the positions that score nothing
    return label_smoothed_nll_loss(lprobs, rows.masked_fill(rows.eq(IGNORE), pad), 0.1, pad)


#: benchmark-only baselines, beside the library's criteria
BASELINES = {"ce_unfused": ce_unfused, "lsce_unfused": label_smoothed_ce_unfused}


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    settings: list[tuple[str, bool]],
    batches: list,
    vocab_size: int,
    device: torch.device,
    args: argparse.Namespace,
) -> list[tuple[float, float]]:
    """For each (criterion, bf16) setting: (target tokens/s over ``args.updates`` timed updates
    after ``args.warmup`` untimed ones, MiB of device memory a step takes above what was
    allocated before it; NaN on the CPU).

    Every setting has its own model (same seed, same initial weights) and optimizer, built on
    ``device``, and they all stay resident: the updates are interleaved, batch by batch, in an
    order reversed every other batch, so that the machine's drifting load and the process's
    state (measured on the CPU: in one process, settings run one after another got 30% slower
    after the first, whatever the criterion) fall on every setting alike. ``batches`` are
    already on ``device``."""
    runs = []
    for name, bf16 in settings:
        torch.manual_seed(args.seed)
        model = Transformer(ModelConfig.preset(args.preset, vocab_size)).to(device)
        optimizer = build_optimizer(model, lr=args.lr, betas=(0.9, 0.98), weight_decay=1e-4)
        criterion = BASELINES.get(name) or name
        runs.append((model, optimizer, teacher_forced_loss(criterion, {}, blank_id=4), bf16))
    seconds = [0.0] * len(runs)
    step_mib = [0.0 if device.type == "cuda" else float("nan")] * len(runs)
    for step, batch in enumerate(batches[: args.warmup + args.updates]):
        order = list(range(len(runs))) if step % 2 == 0 else list(range(len(runs)))[::-1]
        for i in order:
            model, optimizer, loss_fn, bf16 = runs[i]
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            train_step(model, optimizer, batch, loss_fn, update=step, bf16=bf16)
            synchronize(device)
            if step >= args.warmup:
                seconds[i] += time.perf_counter() - start
                if device.type == "cuda":
                    extra = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                    step_mib[i] = max(step_mib[i], extra)
    tokens = sum(b.ntokens for b in batches[args.warmup : args.warmup + args.updates])
    return [(tokens / s, m) for s, m in zip(seconds, step_mib)]


def die(message: str) -> None:
    """A one-line error and exit status 2 (bad input, before any work)."""
    print(f"bench_train.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``; exits 2 otherwise."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = torch.device("meta")  # refused just below
    if device.type not in ("cpu", "cuda"):
        die(f"expected --device auto, cpu or cuda[:N], found {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        die("expected a CUDA device for --device cuda, found none")
    return device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Multi30k directory, or 'synthetic'")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--preset", default="small", help="model preset: small (default), paper, tiny")
    p.add_argument("--vocab-size", type=int, default=8000, help="joint BPE size (default: 8000)")
    p.add_argument("--max-tokens", type=int, default=4096, help="batch budget (default: 4096)")
    p.add_argument("--warmup", type=int, default=None, help="untimed updates (default 2; quick 3)")
    p.add_argument("--updates", type=int, default=None, help="timed updates (default 10)")
    p.add_argument(
        "--quick", action="store_true",
        help="time-boxed check: 3 untimed + 10 timed updates per setting (unless given)",
    )  # fmt: skip
    p.add_argument(
        "--criteria", default="ce,axe",
        help="comma separated criteria (default: ce,axe); also the baselines "
        f"{', '.join(BASELINES)} (the cross entropies before fusing)",
    )  # fmt: skip
    p.add_argument(
        "--precisions", default=None,
        help="fp32 and/or bf16, comma separated (default: fp32 on the CPU, fp32,bf16 on CUDA)",
    )  # fmt: skip
    p.add_argument(
        "--tf32", action=argparse.BooleanOptionalAction, default=True,
        help="CUDA fp32 rows: TF32 matrix products (default: on, as the trainer)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--lr", type=float, default=5e-4, help="constant lr (no warm-up here)")
    p.add_argument("--seed", type=int, default=1, help="seed of model init and batch order")
    p.add_argument("--cache-dir", type=Path, default=None, help="data cache directory")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.quick else 2)
    args.updates = args.updates if args.updates is not None else 10
    if args.warmup < 0 or args.updates < 1:
        p.error(f"expected --warmup >= 0 and --updates >= 1, found {args.warmup}, {args.updates}")
    bad = sorted(set((args.precisions or "fp32").split(",")) - {"fp32", "bf16"})
    if bad:
        p.error(f"expected precisions fp32 and/or bf16, found {bad}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.precisions is None:
        args.precisions = "fp32" if device.type == "cpu" else "fp32,bf16"
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    data_dir = None if args.data == "synthetic" else args.data
    cfg = DataConfig(data=data_dir, src="de", tgt="en", vocab_size=args.vocab_size)
    data = prepare_data(cfg, args.cache_dir or default_cache_dir())
    sampler = TokenBatchSampler(
        data.train.src_sizes, data.train.tgt_sizes, max_tokens=args.max_tokens, seed=args.seed
    )
    need = args.warmup + args.updates
    batches = []
    for indices in sampler:
        batches.append(collate([data.train[i] for i in indices]).to(device))
        if len(batches) == need:
            break
    if len(batches) < need:
        die(
            f"expected {need} batches of {args.max_tokens} tokens, found {len(batches)} in one "
            "epoch (lower --updates/--warmup or --max-tokens)"
        )
    try:
        from latalign.align.backends import resolve

        backend = resolve(None, device)
    except Exception as e:  # the backend line is information only
        backend = f"? ({e})"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"# device={device} ({where}) preset={args.preset} vocab={data.tokenizer.vocab_size} "
        f"max_tokens={args.max_tokens} warmup={args.warmup} timed_updates={args.updates} "
        f"alignment backend={backend} tf32={args.tf32 if device.type == 'cuda' else 'n/a'} "
        f"threads={torch.get_num_threads()} torch={torch.__version__} "
        f"loadavg={os.getloadavg()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    precisions = args.precisions.split(",")
    criteria = args.criteria.split(",")
    settings = [(name, precision) for precision in precisions for name in criteria]
    measured = measure(
        [(name, precision == "bf16") for name, precision in settings],
        batches, data.tokenizer.vocab_size, device, args,
    )  # fmt: skip
    # step MiB (CUDA): device memory one update takes above what was allocated before it
    print(f"{'criterion':<17} {'precision':<9} {'tgt tok/s':>10} {'step MiB':>9}")
    results: dict[tuple[str, str], float] = {}
    rows = []
    for (name, precision), (tps, mib) in zip(settings, measured):
        results[(name, precision)] = tps
        rows.append({"criterion": name, "precision": precision, "tokens_per_s": tps,
                     "step_mib": mib})  # fmt: skip
        print(f"{name:<17} {precision:<9} {tps:>10.0f} {mib:>9.0f}")
    ratios: dict[str, float] = {}
    for precision in precisions:
        if ("ce", precision) in results and ("axe", precision) in results:
            ratio = results[("axe", precision)] / results[("ce", precision)]
            ratios[f"axe/ce {precision}"] = ratio
            print(f"AXE/CE ({precision}) = {ratio:.2f}  (goal: >= {GOAL_AXE_OVER_CE})")
    for fused, unfused in (("ce", "ce_unfused"), ("label_smoothed_ce", "lsce_unfused")):
        for precision in precisions:
            if (fused, precision) in results and (unfused, precision) in results:
                ratio = results[(fused, precision)] / results[(unfused, precision)]
                ratios[f"{fused} fused/unfused {precision}"] = ratio
                print(f"{fused} fused / unfused ({precision}) = {ratio:.2f}")
    for name in criteria:
        if (name, "fp32") in results and (name, "bf16") in results:
            speed = results[(name, "bf16")] / results[(name, "fp32")]
            ratios[f"bf16/fp32 {name}"] = speed
            goal = f"(goal on CUDA: >= {GOAL_BF16_OVER_FP32})" if device.type == "cuda" else ""
            print(f"bf16/fp32 ({name}) = {speed:.2f}  {goal}")
    if device.type == "cpu":
        peak = peak_rss_mib()
        print(f"peak RSS (every setting's model resident) = {peak:.0f} MiB")
    else:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"peak GPU memory of the last step (every setting's model resident) = {peak:.0f} MiB")
    print(f"load average now {os.getloadavg()}")
    out = {
        "device": str(device),
        "device_name": where,
        "preset": args.preset,
        "max_tokens": args.max_tokens,
        "warmup": args.warmup,
        "updates": args.updates,
        "tf32": args.tf32,
        "backend": backend,
        "rows": rows,
        "peak_mib": peak,
        "ratios": ratios,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
