"""Which Triton kernel variants a real training run compiles (no GPU needed).

    python benchmarks/triton_variants.py                       # Multi30k de-en, 200 batches
    python benchmarks/triton_variants.py --batches 50 --criteria axe --dtypes fp32
    python benchmarks/triton_variants.py --warm --device cuda     # compile them (gpu_check.sh)

Triton compiles one binary per *specialisation key* of a launch: the constexpr values
(tiles, flags), the launch options (``num_warps``, …), the argument types and, for every
integer and pointer argument not in the kernel's ``do_not_specialize``, whether it equals 1
(a constant) or is divisible by 16. Variable-length batches change the sizes at every step;
this script measures how many keys that gives.

It takes the batches a training run would take — the project's own data pipeline
(``prepare_data``: the joint BPE, cached) and ``TokenBatchSampler`` under the trainer's
default token budget, shuffled as the trainer shuffles them — and runs each criterion's
loss on ``(B, T, V)`` logits of every batch's shape, forward and backward, with the Triton
launcher *recording* instead of launching (``triton_kernels.record_launches``; the kernels
run under the interpreter's argument handling, their outputs are not computed). Each
recorded launch is keyed with Triton's own specialisation function
(``native_specialize_impl``, as its launcher calls it), and printed per kernel: the number
of keys, and beside it the number there would be if the sizes were specialised on too
(every integer argument: what Triton does without ``do_not_specialize``).

``--warm`` compiles instead (on a GPU, before a timed benchmark): it runs every criterion,
forward and backward, once per tile bucket of the dynamic programs (lengths 16, 100 and
300) in each logits dtype, so that Triton's on-disk cache holds every variant a run takes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

if "--warm" not in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # CPU tensors reach the (recording) launcher

import torch  # noqa: E402

import latalign as la  # noqa: E402
from latalign.align.backends import triton_module  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CRITERIA = {
    "axe": lambda x, t, n, **k: la.axe_loss(x, t, n, n, **(_KW | k)),
    "causal_axe": lambda x, t, n, **k: la.axe_loss(x, t, n, n, causal=True, **(_KW | k)),
    "ctc": lambda x, t, n, **k: la.ctc_loss(x, t, n, n, **(_KW | k)),
    "latent": lambda x, t, n, **k: la.latent_alignment_loss(x, t, n, n, **(_KW | k)),
}
# as translate/criteria call them (teacher forcing: m = n); validation off, since the
# recorded kernels leave their outputs unset
_KW = dict(from_logits=True, reduction="sum", zero_infinity=True, backend="triton", validate=False)


def _specializer():
    """Triton's own ``specialize(arg, specialize_ints) -> key part``, else the documented rule."""
    try:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.compiler import BaseBackend

        def spec(arg, specialize: bool):
            return native_specialize_impl(BaseBackend, arg, False, specialize, True)

        spec(1, True)
        return spec, "triton.native_specialize_impl"
    except (ImportError, AttributeError, TypeError):

        def spec(arg, specialize: bool):  # triton 3.x: 1 -> constant, % 16 -> "D"
            if isinstance(arg, torch.Tensor):
                return (str(arg.dtype), "D" if specialize and arg.data_ptr() % 16 == 0 else "")
            if isinstance(arg, bool) or not isinstance(arg, int):
                return (type(arg).__name__, None)
            if specialize and arg == 1:
                return ("constexpr", 1)
            return ("int", "D" if specialize and arg % 16 == 0 else "")

        return spec, "fallback rule (triton internals not found)"


def _dns(kernel) -> set:
    names = getattr(kernel, "do_not_specialize", None)
    if names is None:  # the interpreter's wrapper keeps the decorator's arguments
        names = getattr(kernel, "kwargs", {}).get("do_not_specialize", ())
    return set(names or ())


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="../shared/data/multi30k", help="parallel text directory")
    ap.add_argument("--src", default="de")
    ap.add_argument("--tgt", default="en")
    ap.add_argument("--vocab-size", type=int, default=8000, help="joint BPE size (trainer's)")
    ap.add_argument("--max-tokens", type=int, default=4096, help="batch budget (trainer's)")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--criteria", default="axe,causal_axe,ctc,latent")
    ap.add_argument("--dtypes", default="fp32,bf16", help="logits dtypes (fp32, bf16)")
    ap.add_argument("--cache-dir", default=None, help="tokenizer cache (trainer's default)")
    ap.add_argument("--show", type=int, default=4, help="keys printed per kernel")
    ap.add_argument("--warm", action="store_true", help="compile every bucket on --device")
    ap.add_argument("--device", default="cuda", help="with --warm: the GPU (default cuda)")
    args = ap.parse_args()
    criteria = args.criteria.split(",")
    dtypes = args.dtypes.split(",")
    bad = [c for c in criteria if c not in CRITERIA] + [d for d in dtypes if d not in DTYPES]
    if bad or args.batches < 1:
        ap.error(f"expected criteria in {list(CRITERIA)}, dtypes in {list(DTYPES)}, "
                 f"--batches >= 1; found {bad or args.batches}")  # fmt: skip

    if args.warm:
        return warm(criteria, dtypes, torch.device(args.device), args.vocab_size)

    from latalign.translate.batching import TokenBatchSampler
    from latalign.translate.data import DataConfig, prepare_data
    from latalign.translate.train import default_cache_dir

    t0 = time.perf_counter()
    cfg = DataConfig(data=args.data, src=args.src, tgt=args.tgt, vocab_size=args.vocab_size)
    data = prepare_data(cfg, args.cache_dir or default_cache_dir())
    vocab = data.tokenizer.vocab_size
    sampler = TokenBatchSampler(
        data.train.src_sizes, data.train.tgt_sizes, max_tokens=args.max_tokens, seed=args.seed
    )
    tgt_sizes = torch.as_tensor(data.train.tgt_sizes)
    batches = []
    for k, indices in enumerate(sampler):
        if k == args.batches:
            break
        batches.append(tgt_sizes[torch.as_tensor(indices)])  # n + 1 per sentence (with eos)
    print(
        f"{data.describe()}; {len(batches)} batches of max_tokens={args.max_tokens} "
        f"({time.perf_counter() - t0:.0f} s to prepare)"
    )
    shapes = sorted({(len(b), int(b.max())) for b in batches})
    print(f"{len(shapes)} distinct (B, T) shapes; T from {min(s[1] for s in shapes)} to "
          f"{max(s[1] for s in shapes)}, B from {min(s[0] for s in shapes)} to "
          f"{max(s[0] for s in shapes)}")  # fmt: skip

    spec, how = _specializer()
    keys = defaultdict(set)  # kernel -> keys as compiled
    keys_all = defaultdict(set)  # kernel -> keys if every size were specialised
    tk = triton_module()

    def record(kernel, grid, a, kw):
        name = tk.kernel_name(kernel)
        names = list(kernel.arg_names)
        dns = _dns(kernel)
        params = [(n, v) for n, v in zip(names, a)]
        consts = tuple(sorted((k, str(v)) for k, v in kw.items()))
        keys[name].add((tuple(spec(v, n not in dns) for n, v in params), consts))
        keys_all[name].add((tuple(spec(v, True) for _, v in params), consts))

    with tk.record_launches(record):
        for dtype in dtypes:
            for crit in criteria:
                for lengths in batches:
                    nb, tmax = len(lengths), int(lengths.max())
                    logits = torch.empty(nb, tmax, vocab, dtype=DTYPES[dtype])
                    logits.requires_grad_()
                    targets = torch.ones(nb, tmax, dtype=torch.int64)
                    CRITERIA[crit](logits, targets, lengths).backward()
    print(f"specialisation keys from {how}; criteria {criteria}, logits {dtypes}\n")
    print("kernel | variants compiled | if sizes were specialised | a few keys (constexprs)")
    print("--- | --- | --- | ---")
    for name in sorted(keys):
        shown = sorted(keys[name], key=str)[: args.show]
        brief = "; ".join(
            ", ".join(f"{k}={v}" for k, v in consts if k.startswith(("BLOCK", "num_warps", "TAIL", "ACC", "CAUSAL", "USE_MAX")))
            for _, consts in shown
        )  # fmt: skip
        print(f"{name} | {len(keys[name])} | {len(keys_all[name])} | {brief}")
    total, total_all = sum(map(len, keys.values())), sum(map(len, keys_all.values()))
    print(f"all kernels | {total} | {total_all} |")
    return 0


def warm(criteria: list[str], dtypes: list[str], device: torch.device, vocab: int) -> int:
    """Compile (run once) every criterion × dtype × tile bucket on ``device``."""
    t0 = time.perf_counter()
    runs = 0
    for dtype in dtypes:
        for crit in criteria:
            for tmax in (16, 100, 300):  # diagonal / state tiles 32, 128, 512
                nb = max(1, 4096 // tmax)
                logits = torch.randn(nb, tmax, vocab, device=device, dtype=DTYPES[dtype])
                logits.requires_grad_()
                targets = 5 + (torch.arange(tmax, device=device) % 7).repeat(nb, 1)
                lengths = torch.full((nb,), tmax, device=device)
                CRITERIA[crit](logits, targets, lengths, validate=True).backward()
                runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(f"warmed {runs} loss calls ({criteria} x {dtypes} x 3 buckets) on {device} "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
