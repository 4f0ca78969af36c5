"""Compile every Triton kernel to a cubin for a GPU target, without a GPU (the triton wheel
ships ptxas). Run by ``test_triton.py`` in a fresh process without ``TRITON_INTERPRET``;
by hand: ``python tests/align/triton_aot.py [sm]`` (default 90)."""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from latalign.align.backends import triton_kernels as tk  # noqa: E402

assert not tk.interpreted(), "TRITON_INTERPRET must be unset before the kernels are imported"
target = GPUTarget("cuda", int(sys.argv[1]) if len(sys.argv) > 1 else 90, 32)
p64, p32, i64, i8 = "*fp64", "*fp32", "*i64", "*i8"
flags = dict(FA=True, FCT=True, FCP=True, FD=True)
causal = (False, True)


def sig(ptrs: str, ints: str = "T S1", default: str = p64, **typed: str) -> dict[str, str]:
    """A signature: each name in ``ptrs`` -> ``name_ptr`` of type ``typed[name]`` (else
    ``default``), then the names in ``ints`` as i32, in the kernel's order."""
    out = {f"{p}_ptr": typed.get(p, default) for p in ptrs.split()}
    return out | {k: "i32" for k in ints.split()}


lens = dict(in_len=i64, tg_len=i64)


def row_logsumexp(x: str, acc: str, acc_ty) -> tuple:
    return sig("x lse", ints="V", x=x, lse=acc), [dict(ACC=acc_ty, BLOCK_V=1024)]


def softmax_grad(x: str, acc: str, acc_ty) -> tuple:
    # the gradient has the logits' type
    s = sig("x lse gsum in_len grad", ints="T V", default=acc, x=x, in_len=i64, grad=x)
    return s, [dict(ACC=acc_ty, BLOCK_V=1024)]


cases = {
    "_algebra_forward_kernel": (
        sig("em in_len tg_len alpha codes loss w", codes=i8, **lens),
        [
            dict(
                CAUSAL=c, USE_MAX=mx, C_ALIGN=1, C_CT=2, C_CP=3, C_D=4, C_NONE=0, BLOCK=128, **flags
            )
            for c in causal
            for mx in (False, True)
        ],
    ),
    "_algebra_beta_kernel": (
        sig("em in_len tg_len beta w", **lens),
        [dict(CAUSAL=c, BLOCK=128, **flags) for c in causal],
    ),
    "_algebra_posterior_kernel": (
        sig("em in_len tg_len alpha beta gscale grad w", **lens),
        [dict(CAUSAL=c, BLOCK_T=128, **flags) for c in causal]
        + [dict(CAUSAL=False, BLOCK_T=64, FA=True, FCT=False, FCP=True, FD=True)],
    ),
    "_backtrack_kernel": (
        sig("codes in_len tg_len di dj steps si sj length", ints="S1 T L", default=i64, codes=i8),
        [dict(C_NONE=0)],
    ),
    "_ctc_forward_kernel": (
        sig("em tg in_len tg_len alpha logz", ints="T S1 S NS", tg=i64, **lens),
        [dict(BLOCK=256)],
    ),
    "_ctc_backward_kernel": (
        sig("em tg in_len tg_len alpha logz gscale beta grad", ints="T S1 S NS", tg=i64, **lens),
        [dict(BLOCK=256)],
    ),
    "_row_logsumexp_kernel": row_logsumexp(p32, p32, triton.language.float32),
    "_softmax_grad_kernel": softmax_grad(p32, p32, triton.language.float32),
    # half-precision and float64 logits
    "_row_logsumexp_kernel/bf16": row_logsumexp("*bf16", p32, triton.language.float32),
    "_softmax_grad_kernel/fp64": softmax_grad(p64, p64, triton.language.float64),
    "_softmax_grad_kernel/fp16": softmax_grad("*fp16", p32, triton.language.float32),
}
bad = 0
for name, (sig, consts_list) in cases.items():
    fn = getattr(tk, name.split("/")[0])
    for consts in consts_list:
        full = dict(sig)
        full.update({k: "constexpr" for k in consts})
        try:
            src = ASTSource(
                fn, full, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}
            )
            options = {"enable_fp_fusion": False} if name == "_algebra_forward_kernel" else {}
            k = triton.compile(src, target=target, options=options)
            assert "cubin" in k.asm, f"no cubin for {name}"
            print("ok  ", name, {a: b for a, b in consts.items() if a in ("CAUSAL", "USE_MAX")})
        except Exception as e:  # report every kernel, then fail
            bad += 1
            print("FAIL", name, consts, type(e).__name__, str(e)[:1500])
print(f"{bad} failed")
sys.exit(1 if bad else 0)
