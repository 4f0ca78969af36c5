"""Compile every Triton launch the losses make to a cubin for a GPU target, without a GPU (the
triton wheel ships ptxas). Run by ``test_triton.py`` in a fresh process without
``TRITON_INTERPRET``; by hand: ``python tests/align/triton_aot.py [sm]`` (default 90).

The launches are not written out here: the losses' own wrappers run on tiny CPU tensors with
the launcher recording instead of launching (``triton_kernels.record_launches``), over every
constexpr variant they use (sum/max, causal, each tail, CTC, each logits dtype), and each
distinct (kernel, signature, constexprs, options) is compiled.
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from latalign.align import SCHEMATIC_CTC_OPERATORS, axe_objective  # noqa: E402
from latalign.align.backends import triton_kernels as tk  # noqa: E402
from latalign.align.objective import OPERATORS, Objective  # noqa: E402

assert not tk.interpreted(), "TRITON_INTERPRET must be unset before the kernels are imported"
target = GPUTarget("cuda", int(sys.argv[1]) if len(sys.argv) > 1 else 90, 32)


def launches() -> dict:
    """Every distinct launch of the loss wrappers: key -> (kernel, signature, constexprs, options)."""
    seen: dict = {}

    def record(kernel, grid, args, kwargs):
        sig, consts, opts = tk.launch_signature(kernel, args, kwargs)
        key = (tk.kernel_name(kernel), tuple(sig.items()), tuple(consts.items()))
        seen.setdefault(key + (tuple(opts.items()),), (kernel, sig, consts, opts))

    nb, tmax, s1 = 2, 5, 4
    em = torch.randn(nb, tmax, s1, dtype=torch.float64)
    in_len = torch.tensor([5, 3])
    tg_len = torch.tensor([3, 2])
    g = torch.ones(nb, dtype=torch.float64)
    objectives = [
        axe_objective(0.5),
        axe_objective(causal=True),
        Objective.make(OPERATORS, "max"),
        Objective.make(SCHEMATIC_CTC_OPERATORS, "sum"),
        Objective.make(OPERATORS, "sum", causal=True),
    ]
    with tk.record_launches(record):
        for obj in objectives:
            for tail in (0, 1, 2):
                loss, alpha, _, out = tk.algebra_forward(em, in_len, tg_len, obj, tail=tail)
            if obj.aggregate == "max":
                tk.path_gradient(torch.zeros_like(em), loss, g)
            else:
                tk.algebra_backward_sum(em, in_len, tg_len, obj, alpha, g.expand(nb))
        targets = torch.randint(1, 9, (nb, s1))[:, 1:]
        alpha, loss = tk.ctc_forward(em, targets, in_len, tg_len)
        tk.ctc_backward(em, targets, in_len, tg_len, alpha, loss, g)
        idx = torch.randint(0, 50, (nb, s1))
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            for vocab in (50, 3000):  # both vocabulary tiles
                logits = torch.randn(nb, tmax, vocab).to(dtype)
                _, lse = tk.emissions_from_logits(logits, idx)
                tk.logits_gradient(logits, lse, idx, em, in_len)
    return seen


bad = 0
found = launches()
for (name, *_), (kernel, sig, consts, opts) in sorted(found.items(), key=lambda kv: str(kv[0])):
    fn = kernel
    try:
        src = ASTSource(
            fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}
        )
        compiled = triton.compile(src, target=target, options=opts)
        assert "cubin" in compiled.asm, f"no cubin for {name}"
        shown = {k: v for k, v in consts.items() if k in ("CAUSAL", "USE_MAX", "TAIL", "ACC")}
        print(
            "ok  ",
            name,
            shown,
            {k: v for k, v in sig.items() if k.endswith("_ptr")}.get("x_ptr", ""),
        )
    except Exception as e:  # report every kernel, then fail
        bad += 1
        print("FAIL", name, consts, type(e).__name__, str(e)[:1500])
kernels = {key[0] for key in found}
print(f"{len(found)} launches of {len(kernels)} kernels compiled, {bad} failed")
sys.exit(1 if bad else 0)
