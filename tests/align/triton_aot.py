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
cases = {
    "_algebra_forward_kernel": (
        dict(
            em_ptr=p64,
            in_len_ptr=i64,
            tg_len_ptr=i64,
            alpha_ptr=p64,
            codes_ptr=i8,
            loss_ptr=p64,
            w_ptr=p64,
            T="i32",
            S1="i32",
        ),
        [
            dict(
                CAUSAL=c, USE_MAX=mx, C_ALIGN=1, C_CT=2, C_CP=3, C_D=4, C_NONE=0, BLOCK=128, **flags
            )
            for c in (False, True)
            for mx in (False, True)
        ],
    ),
    "_algebra_beta_kernel": (
        dict(
            em_ptr=p64, in_len_ptr=i64, tg_len_ptr=i64, beta_ptr=p64, w_ptr=p64, T="i32", S1="i32"
        ),
        [dict(CAUSAL=c, BLOCK=128, **flags) for c in (False, True)],
    ),
    "_algebra_posterior_kernel": (
        dict(
            em_ptr=p64,
            in_len_ptr=i64,
            tg_len_ptr=i64,
            alpha_ptr=p64,
            beta_ptr=p64,
            gscale_ptr=p64,
            grad_ptr=p64,
            w_ptr=p64,
            T="i32",
            S1="i32",
        ),
        [dict(CAUSAL=c, BLOCK_T=128, **flags) for c in (False, True)]
        + [dict(CAUSAL=False, BLOCK_T=64, FA=True, FCT=False, FCP=True, FD=True)],
    ),
    "_backtrack_kernel": (
        dict(
            codes_ptr=i8,
            in_len_ptr=i64,
            tg_len_ptr=i64,
            di_ptr=i64,
            dj_ptr=i64,
            steps_ptr=i64,
            si_ptr=i64,
            sj_ptr=i64,
            length_ptr=i64,
            S1="i32",
            T="i32",
            L="i32",
        ),
        [dict(C_NONE=0)],
    ),
    "_ctc_forward_kernel": (
        dict(
            em_ptr=p64,
            tg_ptr=i64,
            in_len_ptr=i64,
            tg_len_ptr=i64,
            alpha_ptr=p64,
            logz_ptr=p64,
            T="i32",
            S1="i32",
            S="i32",
            NS="i32",
        ),
        [dict(BLOCK=256)],
    ),
    "_ctc_backward_kernel": (
        dict(
            em_ptr=p64,
            tg_ptr=i64,
            in_len_ptr=i64,
            tg_len_ptr=i64,
            alpha_ptr=p64,
            logz_ptr=p64,
            gscale_ptr=p64,
            beta_ptr=p64,
            grad_ptr=p64,
            T="i32",
            S1="i32",
            S="i32",
            NS="i32",
        ),
        [dict(BLOCK=256)],
    ),
    "_row_logsumexp_kernel": (
        dict(x_ptr=p32, lse_ptr=p32, V="i32"),
        [dict(ACC=triton.language.float32, BLOCK_V=1024)],
    ),
    "_softmax_grad_kernel": (
        dict(x_ptr=p32, lse_ptr=p32, gsum_ptr=p32, in_len_ptr=i64, grad_ptr=p32, T="i32", V="i32"),
        [dict(ACC=triton.language.float32, BLOCK_V=1024)],
    ),
}
# half-precision and float64 logits
cases["_row_logsumexp_kernel/bf16"] = (
    dict(x_ptr="*bf16", lse_ptr=p32, V="i32"),
    [dict(ACC=triton.language.float32, BLOCK_V=1024)],
)
cases["_softmax_grad_kernel/fp64"] = (
    dict(x_ptr=p64, lse_ptr=p64, gsum_ptr=p64, in_len_ptr=i64, grad_ptr=p64, T="i32", V="i32"),
    [dict(ACC=triton.language.float64, BLOCK_V=1024)],
)
cases["_softmax_grad_kernel/fp16"] = (
    dict(
        x_ptr="*fp16", lse_ptr=p32, gsum_ptr=p32, in_len_ptr=i64, grad_ptr="*fp16", T="i32", V="i32"
    ),
    [dict(ACC=triton.language.float32, BLOCK_V=1024)],
)
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
