"""Compile every DAG Triton kernel to a cubin for a GPU target, without a GPU (the triton wheel
ships ptxas), as ``triton_aot.py`` does for the other kernels. Run by ``test_dag_triton.py``
in a fresh process without ``TRITON_INTERPRET``; by hand:
``python tests/align/triton_aot_dag.py [sm]`` (default 90)."""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from latalign.align.backends import dag_triton as dk  # noqa: E402

target = GPUTarget("cuda", int(sys.argv[1]) if len(sys.argv) > 1 else 90, 32)
p64, i64, i32 = "*fp64", "*i64", "*i32"


def sig(ptrs: str, ints: str, **typed: str) -> dict[str, str]:
    """``name_ptr`` for each of ``ptrs`` (float64 unless ``typed``), then ``ints`` as i32."""
    out = {f"{p}_ptr": typed.get(p, p64) for p in ptrs.split()}
    return out | {k: "i32" for k in ints.split()}


lens = dict(vl=i64, tl=i64)
blocks = [dict(BLOCK_U=b, BLOCK_V=b) for b in (16, 64)]
cases = {
    "_forward_step_kernel": (
        sig("et tr vl tl alpha bp", "i L S", bp=i32, **lens),
        [dict(USE_MAX=mx, **bl) for mx in (False, True) for bl in blocks],
    ),
    "_backward_step_kernel": (
        sig("et tr vl tl alpha beta logz gscale g_et", "i L S", **lens),
        blocks,
    ),
    "_transition_grad_kernel": (
        sig("et tr vl tl alpha beta logz gscale g_tr", "L S", **lens),
        blocks,
    ),
}
bad = 0
for name, (signature, consts_list) in cases.items():
    fn = getattr(dk, name)
    for consts in consts_list:
        full = dict(signature) | {k: "constexpr" for k in consts}
        try:
            src = ASTSource(
                fn, full, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}
            )
            kernel = triton.compile(src, target=target)
            assert "cubin" in kernel.asm, f"no cubin for {name}"
            print("ok  ", name, consts)
        except Exception as e:  # report every kernel, then fail
            bad += 1
            print("FAIL", name, consts, type(e).__name__, str(e)[:1500])
print(f"{bad} failed")
sys.exit(1 if bad else 0)
