"""Speed of the alignment losses against PyTorch's cross entropy and CTC (forward + backward).

    python benchmarks/bench_losses.py                  # the README table (a few minutes on 2 cores)
    python benchmarks/bench_losses.py --quick          # fewer repeats
    python benchmarks/bench_losses.py --quick --sizes 30x30,100x100 --skip-memory   # shorter
    python benchmarks/bench_losses.py --baseline ../main/src   # + another checkout's losses,
                                                               #   interleaved in the same run
    python benchmarks/bench_losses.py --quick --sizes 8x8 --table-only   # the dry-run check
    python benchmarks/bench_losses.py --device cuda    # Triton kernels vs torch on one GPU
    python benchmarks/bench_losses.py --device cuda --quick   # for a GPU check script (~1 min)

Every row times forward + backward *from logits* (log-softmax included) at N=64, V=8000,
as the median of interleaved repeats, so the baselines and ours share the machine's state.
The cross-entropy baseline runs on the same (N, m, V) logits (targets padded to m).
Ratios < 1 mean faster than the baseline measured in the same run.

On CUDA (``--device cuda``) every timing is bracketed by ``torch.cuda.synchronize()``, and
the memory rows give ``torch.cuda.max_memory_allocated`` for one forward + backward, in
total and above the logits and their gradient (the loss's own memory).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from functools import partial

import numba
import torch
import torch.nn.functional as F

import latalign as la
from latalign.align import dispatch
from latalign.align.objective import axe_objective


def timeit(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make(nb: int, n: int, m: int, v: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(nb, m, v, generator=gen).requires_grad_()
    targets = torch.randint(1, v, (nb, n), generator=gen)
    return logits, targets


def load_baseline(src: str):
    """Another checkout's loss library (``SRC/latalign/align``), imported beside ours as the
    package ``latalign_baseline_align`` (it imports nothing of latalign outside align/)."""
    import importlib.util
    from pathlib import Path

    init = Path(src) / "latalign" / "align" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"error: expected {init} for --baseline, found no such file")
    spec = importlib.util.spec_from_file_location(
        "latalign_baseline_align", init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def case_fns(logits, targets, n: int, m: int, baseline=None):
    nb, _, v = logits.shape
    in_len = torch.full((nb,), m)
    tg_len = torch.full((nb,), n)
    padded = torch.cat([targets, targets[:, : m - n]], dim=1) if m > n else targets  # CE baseline

    def ce():
        loss = F.cross_entropy(logits.view(-1, v), padded.reshape(-1), reduction="sum")
        loss.backward()

    def torch_ctc():
        lp = logits.log_softmax(-1)
        loss = F.ctc_loss(
            lp.transpose(0, 1), targets, in_len, tg_len, reduction="sum", zero_infinity=True
        )
        loss.backward()

    def axe():
        la.axe_loss(logits, targets, in_len, tg_len, from_logits=True, reduction="sum").backward()

    def axe_log_softmax():
        lp = logits.log_softmax(-1)
        la.axe_loss(lp, targets, in_len, tg_len, reduction="sum").backward()

    def axe_torch_backend():
        la.axe_loss(
            logits, targets, in_len, tg_len, from_logits=True, reduction="sum", backend="torch"
        ).backward()

    def ctc():
        la.ctc_loss(
            logits, targets, in_len, tg_len, from_logits=True, reduction="sum", zero_infinity=True
        ).backward()

    def clear():
        logits.grad = None

    fns = {
        "torch cross_entropy": ce,
        "torch ctc_loss": torch_ctc,
        "la.axe_loss (logits)": axe,
        "la.axe_loss (log_softmax)": axe_log_softmax,
        "la.ctc_loss (logits)": ctc,
        "la.axe_loss torch backend": axe_torch_backend,
    }
    if baseline is not None:
        fns["baseline axe"] = lambda: baseline.axe_loss(
            logits, targets, in_len, tg_len, from_logits=True, reduction="sum"
        ).backward()
        fns["baseline ctc"] = lambda: baseline.ctc_loss(
            logits, targets, in_len, tg_len, from_logits=True, reduction="sum", zero_infinity=True
        ).backward()
    return fns, clear


def bench_table(sizes, repeats: int, baseline=None) -> None:
    print(
        f"\nforward+backward from logits, N=64, V=8000, median of {repeats} interleaved repeats (ms)"
    )
    header = [
        "(n, m)",
        "torch CE",
        "torch CTC",
        "axe",
        "axe/CE",
        "axe(lsm)/CE",
        "ctc",
        "ctc/torchCTC",
        "axe torch-backend",
    ]
    if baseline is not None:
        header += ["base axe/CE", "base ctc/torchCTC", "axe/base", "ctc/base"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for n, m in sizes:
        logits, targets = make(64, n, m, 8000)
        fns, clear = case_fns(logits, targets, n, m, baseline)
        for fn in fns.values():  # warm up (numba compile, allocator)
            fn()
            clear()
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                clear()
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ce, tctc = med["torch cross_entropy"], med["torch ctc_loss"]
        axe, axe_l, ctc = (
            med["la.axe_loss (logits)"],
            med["la.axe_loss (log_softmax)"],
            med["la.ctc_loss (logits)"],
        )
        row = [
            f"({n}, {m})",
            f"{ce:.1f}",
            f"{tctc:.1f}",
            f"{axe:.1f}",
            f"{axe / ce:.2f}",
            f"{axe_l / ce:.2f}",
            f"{ctc:.1f}",
            f"{ctc / tctc:.2f}",
            f"{med['la.axe_loss torch backend']:.1f}",
        ]
        if baseline is not None:
            b_axe, b_ctc = med["baseline axe"], med["baseline ctc"]
            row += [f"{b_axe / ce:.2f}", f"{b_ctc / tctc:.2f}"]
            row += [f"{axe / b_axe:.3f}", f"{ctc / b_ctc:.3f}"]
        print(" | ".join(row))
        del logits
        gc.collect()


def _algebra_fwd_bwd(data, obj, backend: str) -> None:
    em, _, in_len, tg_len, gs = data
    state = dispatch.algebra_forward(em, in_len, tg_len, obj, backend, keep=True)
    dispatch.algebra_backward(state, em, in_len, tg_len, gs)


def _ctc_fwd_bwd(data) -> None:
    em, targets, in_len, tg_len, gs = data
    state = dispatch.ctc_forward(em, targets, in_len, tg_len, "numba", keep=True)
    dispatch.ctc_backward(state, em, targets, in_len, tg_len, gs)


def bench_dp(repeats: int) -> None:
    """The dynamic programs alone, on pre-gathered emissions (ns per grid cell, fwd + bwd)."""
    print(
        f"\nDP alone (emissions given), N=64, forward+backward, median of {repeats} (ns per cell)"
    )
    print(
        "(n, m) | AXE numba | AXE torch | sum {all four} numba | sum {all four} torch | CTC numba"
    )
    print("--- | --- | --- | --- | --- | ---")
    axe = axe_objective()
    sum_all = la.Objective.make(la.OPERATORS, "sum")
    for n, m in [(30, 30), (100, 100)]:
        nb = 64
        em = torch.randn(nb, m, n + 1, dtype=torch.float64).log_softmax(-1)
        targets = torch.randint(1, 50, (nb, n))
        in_len = torch.full((nb,), m)
        tg_len = torch.full((nb,), n)
        gs = torch.ones(nb, dtype=torch.float64)
        cells = nb * (n + 1) * (m + 1)

        cols = []
        data = (em, targets, in_len, tg_len, gs)
        for fn in [
            partial(_algebra_fwd_bwd, data, axe, "numba"),
            partial(_algebra_fwd_bwd, data, axe, "torch"),
            partial(_algebra_fwd_bwd, data, sum_all, "numba"),
            partial(_algebra_fwd_bwd, data, sum_all, "torch"),
            partial(_ctc_fwd_bwd, data),
        ]:
            fn()
            cols.append(timeit(fn, repeats) / cells * 1e9)
        ctc_cells = nb * m * (2 * n + 1)
        cols[-1] = cols[-1] * cells / ctc_cells
        print(f"({n}, {m}) | " + " | ".join(f"{c:.2f}" for c in cols))
    print("(CTC: per cell of its (m, 2n+1) lattice)")


def _peak_gib_child(n: int) -> None:
    logits, targets = make(1, n, n, 8000)
    la.axe_loss(logits, targets, [n], [n], from_logits=True).backward()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def bench_memory(limit_gib: float = 4.0) -> None:
    """Largest n = m whose forward+backward fits in ``limit_gib`` (peak RSS of a fresh process)."""
    import subprocess

    print(
        f"\nlargest n = m whose AXE forward+backward (from logits) fits in {limit_gib:g} GiB, N=1, V=8000"
    )
    print("n = m | peak RSS (GiB)")
    print("--- | ---")

    def peak(n: int) -> float | None:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(
                f"{n} | failed ({out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode})"
            )
            return None
        value = float(out.stdout.strip().splitlines()[-1])
        print(f"{n} | {value:.2f}")
        return value

    best, worst = 0, None
    for n in [1000, 2000, 4000, 8000, 12000, 16000, 24000]:
        value = peak(n)
        if value is None or value > limit_gib:
            worst = n
            break
        best = n
    while worst is not None and worst - best > 500:  # bisect to 500
        mid = (best + worst) // 2
        value = peak(mid)
        if value is None or value > limit_gib:
            worst = mid
        else:
            best = mid
    print(f"largest measured n = m within {limit_gib:g} GiB: {best}")


def _cuda_time(fn, clear, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        clear()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_cuda_table(repeats: int) -> None:
    """Triton AXE/CTC from logits against F.cross_entropy and torch's CUDA ctc_loss."""
    print(
        f"\nCUDA forward+backward from logits, N=64, V=8000, median of {repeats} (ms); "
        "goals: axe/CE <= 1.1, ctc/torchCTC <= 0.5"
    )
    header = ["(n, m)", "torch CE", "torch CTC", "axe triton", "axe/CE", "ctc triton"]
    header += ["ctc/torchCTC", "axe torch-backend", "axe torch/CE"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for n in (30, 100):
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(64, n, 8000, generator=gen).cuda().requires_grad_()
        # targets without equal neighbours, so that real CTC is feasible at m = n
        targets = 1 + torch.arange(n) % 7 + 7 * torch.randint(0, 1000, (64, n), generator=gen)
        targets = targets.clamp(max=7999).cuda()
        lengths = torch.full((64,), n, device="cuda")

        def ce(logits=logits, targets=targets):
            F.cross_entropy(logits.view(-1, 8000), targets.view(-1), reduction="sum").backward()

        def torch_ctc(logits=logits, targets=targets, lengths=lengths):
            lp = logits.log_softmax(-1).transpose(0, 1)
            F.ctc_loss(
                lp, targets, lengths, lengths, reduction="sum", zero_infinity=True
            ).backward()

        def ours(loss_fn, backend, logits=logits, targets=targets, lengths=lengths, **kw):
            loss_fn(
                logits,
                targets,
                lengths,
                lengths,
                from_logits=True,
                reduction="sum",
                backend=backend,
                **kw,
            ).backward()

        def clear(logits=logits):
            logits.grad = None

        fns = {
            "ce": ce,
            "tctc": torch_ctc,
            "axe": partial(ours, la.axe_loss, "triton"),
            "ctc": partial(ours, la.ctc_loss, "triton", zero_infinity=True),
            "axe_torch": partial(ours, la.axe_loss, "torch"),
        }
        for fn in fns.values():  # warm up: Triton compiles, the allocator settles
            fn()
            clear()
        med = {k: _cuda_time(fn, clear, repeats) for k, fn in fns.items()}
        row = [f"({n}, {n})", f"{med['ce']:.2f}", f"{med['tctc']:.2f}", f"{med['axe']:.2f}"]
        row += [f"{med['axe'] / med['ce']:.2f}", f"{med['ctc']:.2f}"]
        row += [f"{med['ctc'] / med['tctc']:.2f}", f"{med['axe_torch']:.2f}"]
        row += [f"{med['axe_torch'] / med['ce']:.2f}"]
        print(" | ".join(row))
        del logits
        torch.cuda.empty_cache()


def bench_cuda_memory(vocab: int) -> None:
    """Peak CUDA memory of one Triton forward + backward at n=m=1000 N=64 and n=m=4000 N=8."""
    print(
        f"\nCUDA peak memory, forward+backward from logits, V={vocab} (GiB); "
        "goal: n=m=1000 N=64 within 2 GiB of the loss's own memory"
    )
    print("loss | (N, n=m) | peak | above logits+grad | ms")
    print("--- | --- | --- | --- | ---")
    for name in ("axe", "ctc"):
        for nb, n in ((64, 1000), (8, 4000)):
            gen = torch.Generator().manual_seed(0)
            logits = torch.randn(nb, n, vocab, generator=gen).cuda().requires_grad_()
            targets = (1 + torch.arange(n) % 7).repeat(nb, 1).cuda()
            lengths = torch.full((nb,), n, device="cuda")
            fn = la.ctc_loss if name == "ctc" else la.axe_loss
            inputs = 2 * logits.numel() * logits.element_size()  # logits + their gradient
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fn(logits, targets, lengths, lengths, from_logits=True, backend="triton").backward()
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3
            peak = torch.cuda.max_memory_allocated()
            print(
                f"{name} | ({nb}, {n}) | {peak / 2**30:.2f} | {(peak - inputs) / 2**30:.2f} "
                f"| {ms:.0f}"
            )
            del logits
            torch.cuda.empty_cache()


def main_cuda(quick: bool) -> int:
    if not torch.cuda.is_available():
        print("error: expected a CUDA device for --device cuda, found none", file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("error: expected TRITON_INTERPRET unset for --device cuda, found 1", file=sys.stderr)
        return 2
    import triton

    print(
        f"torch {torch.__version__}, triton {triton.__version__}, "
        f"device {torch.cuda.get_device_name()}"
    )
    bench_cuda_table(5 if quick else 20)
    bench_cuda_memory(vocab=64 if quick else 8000)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--skip-memory", action="store_true", help="skip the memory search")
    ap.add_argument(
        "--table-only",
        action="store_true",
        help="only the from-logits table (no DP-alone table, no memory search)",
    )
    ap.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cpu (numba) or cuda (Triton)"
    )
    ap.add_argument(
        "--sizes",
        default="30x30,30x60,100x100,100x200",
        help="(n, m) pairs of the CPU table, as NxM,NxM (default: the README's four)",
    )
    ap.add_argument(
        "--baseline",
        metavar="SRC",
        help="also time another checkout's axe_loss/ctc_loss (SRC/latalign/align), interleaved",
    )
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        sizes = [tuple(int(v) for v in pair.split("x")) for pair in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or not all(len(p) == 2 and 1 <= p[0] <= p[1] for p in sizes):
        ap.error(f"expected --sizes as NxM,NxM with 1 <= n <= m, found {args.sizes!r}")
    if args.device == "cuda":
        sys.exit(main_cuda(args.quick))
    if args.memory_child:
        _peak_gib_child(args.memory_child)
        return
    repeats = 5 if args.quick else 15
    print(
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, numba {numba.__version__} "
        f"threads {numba.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )
    bench_table(sizes, repeats, load_baseline(args.baseline) if args.baseline else None)
    if args.table_only:
        return
    bench_dp(repeats)
    print(f"numba threading layer: {numba.threading_layer()}")
    if not args.skip_memory:
        bench_memory()


if __name__ == "__main__":
    main()
