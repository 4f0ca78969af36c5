"""DAG latent alignment (DA-Transformer): latalign's ``dag_loss`` against a plain-torch reference.

Forward + backward **from logits** (log-softmax included) at DA-Transformer-like sizes,
default N=32, L=128, S=30, V=8000, float32 logits and transitions. Rows:

- ``latalign numba``: ``la.dag_loss(..., from_logits=True, backend="numba")``;
- ``latalign torch``: the same with the vectorized torch backend (meant for GPUs);
- ``plain torch``: the reference written here, as DA-Transformer's PyTorch fallback does it:
  ``log_softmax`` over the vocabulary, a gather of the targets, then autograd through the
  logsumexp recursion over the target positions (one ``(N, L, L)`` tensor kept per step).

Each variant runs in its own subprocess (so that its peak memory is its own: ``ru_maxrss``,
and the peak above the RSS once the inputs exist), rounds interleaved; times are the median
of every repeat of every round. The losses of all variants are printed: they must agree.

    python benchmarks/bench_dag.py            # the default sizes
    python benchmarks/bench_dag.py --n 8 --l 64 --s 16 --v 1000 --repeats 3
    python benchmarks/bench_dag.py --log-probs   # the dynamic program alone: inputs are
                                                 # log-probabilities, no normaliser over V
    python benchmarks/bench_dag.py --baseline /tmp/old/src   # + another checkout's numba
                                                 # backend ("baseline numba"), interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = ("latalign numba", "latalign torch", "plain torch")


def _safe_logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    # torch.logsumexp back-propagates NaN through an all -inf slice (an unreachable vertex);
    # the reference masks it, as DA-Transformer's fallback does
    top = x.amax(dim=dim, keepdim=True).detach()
    dead = torch.isinf(top)
    top = top.masked_fill(dead, 0.0)
    total = (x - top).exp().sum(dim=dim, keepdim=True)
    return (total.masked_fill(dead, 1.0).log() + top.masked_fill(dead, float("-inf"))).squeeze(dim)


def reference_dag_loss(
    logits, transitions, targets, vertex_lengths, target_lengths, from_logits=True
):
    """Plain-torch DAG loss (mean of loss / n), autograd through the recursion
    (``from_logits=False``: ``logits`` are log-probabilities already)."""
    nb, lmax, _ = logits.shape
    smax = targets.shape[1]
    lp = logits.log_softmax(-1) if from_logits else logits
    em = lp.gather(2, targets.view(nb, 1, smax).expand(nb, lmax, smax))  # (N, L, S)
    idx = torch.arange(lmax)
    vert = idx.view(1, lmax) < vertex_lengths.view(nb, 1)
    edge = (
        (idx.view(lmax, 1) < idx.view(1, lmax)).unsqueeze(0) & vert.unsqueeze(2) & vert.unsqueeze(1)
    )
    trans = transitions.masked_fill(~edge, float("-inf"))
    f = torch.where(idx.view(1, lmax) == 0, em[:, :, 0], float("-inf"))  # (N, L), step 0
    last = vertex_lengths - 1
    rows = torch.arange(nb)
    logz = torch.where(target_lengths == 1, f[rows, last], float("-inf"))
    for i in range(1, smax):
        f = _safe_logsumexp(f.unsqueeze(2) + trans, dim=1) + em[:, :, i]
        f = f.masked_fill(~vert, float("-inf"))
        logz = torch.where(target_lengths == i + 1, f[rows, last], logz)
    return (-logz / target_lengths.clamp(min=1)).mean()


def make_inputs(nb: int, lmax: int, smax: int, ncls: int, seed: int = 0, log_probs: bool = False):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(nb, lmax, ncls, generator=gen)
    logits = (logits.log_softmax(-1) if log_probs else logits).requires_grad_()
    later = torch.ones(lmax, lmax, dtype=torch.bool).triu(1)
    scores = torch.randn(nb, lmax, lmax, generator=gen).masked_fill(~later, float("-inf"))
    trans = scores.log_softmax(-1).nan_to_num(nan=0.0).requires_grad_()  # last row: no edge
    targets = torch.randint(0, ncls, (nb, smax), generator=gen)
    vl = torch.full((nb,), lmax)
    tl = torch.full((nb,), smax)
    return logits, trans, targets, vl, tl


def _loss_fn(variant: str, from_logits: bool = True):
    import latalign as la

    if variant == "plain torch":
        return lambda *inputs: reference_dag_loss(*inputs, from_logits=from_logits)
    backend = variant.split()[1]

    def run(logits, trans, targets, vl, tl):
        return la.dag_loss(logits, trans, targets, vl, tl, from_logits=from_logits, backend=backend)

    return run


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def child(args) -> None:
    """One variant, in this process: ``{"times": [...], "peak": MiB, "base": MiB, "loss": x}``."""
    torch.set_num_threads(args.threads)
    from latalign.align.backends import set_numba_threads

    set_numba_threads(args.threads)
    fn = _loss_fn(args.variant, from_logits=not args.log_probs)
    inputs = make_inputs(args.n, args.l, args.s, args.v, log_probs=args.log_probs)
    base = _rss_mib()
    times = []
    for k in range(args.repeats + 1):  # the first run warms up (numba's cache, allocator)
        for x in inputs[:2]:
            x.grad = None
        start = time.perf_counter()
        loss = fn(*inputs)
        loss.backward()
        if k:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(dict(times=times, peak=peak, base=base, loss=float(loss))))


def check_gradients() -> float:
    """Max abs difference of latalign's gradients to the reference's, on a small problem."""
    import latalign as la

    logits, trans, targets, vl, tl = make_inputs(3, 12, 5, 20, seed=1)
    logits = logits.detach().double().requires_grad_()
    trans = trans.detach().double().requires_grad_()
    vl = torch.tensor([12, 9, 6])
    tl = torch.tensor([5, 3, 4])
    grads = []
    for fn in (reference_dag_loss, la.dag_loss):
        kw = {} if fn is reference_dag_loss else dict(from_logits=True)
        loss = fn(logits, trans, targets, vl, tl, **kw)
        grads.append(torch.autograd.grad(loss, (logits, trans)))
    return max(float((a - b).abs().max()) for a, b in zip(*grads))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--l", type=int, default=128)
    p.add_argument("--s", type=int, default=30)
    p.add_argument("--v", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved subprocess rounds")
    p.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    p.add_argument(
        "--log-probs",
        action="store_true",
        help="inputs are log-probabilities (from_logits=False): times the dynamic program "
        "without the log-softmax over V that every variant otherwise shares",
    )
    p.add_argument(
        "--baseline",
        metavar="SRC",
        help="also time another checkout's numba backend (SRC/latalign), in the same rounds",
    )
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline and not (Path(args.baseline) / "latalign" / "__init__.py").is_file():
        p.error(f"--baseline: expected a source folder holding latalign/, found {args.baseline}")
    if args.variant:
        child(args)
        return
    print(
        f"gradient check (N=3, L=12, S=5, V=20, float64): max |latalign - reference| = {check_gradients():.2e}"
    )
    variants = (*VARIANTS, "baseline numba") if args.baseline else VARIANTS
    results = {v: dict(times=[], peak=[], extra=[], loss=[]) for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            cmd = [sys.executable, __file__, "--variant", variant]
            for k in ("n", "l", "s", "v", "repeats", "threads"):
                cmd += [f"--{k}", str(getattr(args, k))]
            cmd += ["--log-probs"] if args.log_probs else []
            env = dict(os.environ)
            if variant.startswith("baseline"):  # the other checkout's latalign comes first
                src = str(Path(args.baseline).resolve())
                env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, env.get("PYTHONPATH"))))
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[variant]["times"] += r["times"]
            results[variant]["peak"].append(r["peak"])
            results[variant]["extra"].append(r["peak"] - r["base"])
            results[variant]["loss"].append(r["loss"])
    print(
        f"\nDAG loss forward + backward from {'log-probs' if args.log_probs else 'logits'}: "
        f"N={args.n}, L={args.l}, S={args.s}, "
        f"V={args.v}, float32; {args.threads} torch / numba threads; median of "
        f"{args.rounds} x {args.repeats} runs, each variant in its own subprocess\n"
    )
    if args.baseline:
        print(f"(baseline numba: latalign from {args.baseline})\n")
    ref = statistics.median(results["plain torch"]["times"])
    ref_extra = max(results["plain torch"]["extra"])
    print(
        "| variant | fwd+bwd (ms) | vs plain torch | peak RSS (MiB) | peak over inputs (MiB) | loss |"
    )
    print("|---|---|---|---|---|---|")
    for variant in variants:
        r = results[variant]
        t = statistics.median(r["times"])
        extra = max(r["extra"])
        print(
            f"| {variant} | {1000 * t:.1f} | **{ref / t:.2f}x** faster | {max(r['peak']):.0f} | "
            f"{extra:.0f} ({extra / ref_extra:.2f} of plain torch) | {r['loss'][-1]:.6f} |"
        )


if __name__ == "__main__":
    main()
