"""Compare two ``latalign reproduce`` run directories (issue 17's behaviour check).

    python benchmarks/compare_reproductions.py RUN_A RUN_B

Prints, for every experiment directory with a ``result.json`` in both runs, how many
numeric and text leaves are equal (timings left out) and each one that differs; then, when
both runs finished (``results.json``), every claim's verdict (``passed``: ✓ ✗ —) in A and B and the fields of a
claim that differ. Exit status 0; it reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterator
from typing import Any

#: keys of measured durations and speeds: they differ run to run on a shared machine
TIMING_KEYS = ("seconds", "wall", "elapsed", "per_second", "sentences_per_s", "latency", "_ms")


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` of every scalar in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    return x == y


def differences(a: Any, b: Any) -> tuple[int, list[str]]:
    """How many leaves are equal, and a line per leaf that differs (timings skipped)."""
    la, lb = dict(leaves(a)), dict(leaves(b))
    equal, lines = 0, []
    for key in sorted(set(la) | set(lb)):
        if any(t in key.lower() for t in TIMING_KEYS):
            continue
        x, y = la.get(key, "<absent>"), lb.get(key, "<absent>")
        if same(x, y):
            equal += 1
        else:
            lines.append(f"    {key}: {x!r} -> {y!r}")
    return equal, lines


def key_numbers(record: dict[str, Any]) -> str:
    """An experiment's test BLEU, empty share and final validation loss, as text."""
    result = record.get("result", {})
    test = result.get("test") if isinstance(result.get("test"), dict) else result
    values = (test.get("bleu"), test.get("empty_share"), result.get("final_valid_loss"))
    return " ".join("-" if v is None else f"{v:.4f}" for v in values)


def result_files(root: str) -> dict[str, str]:
    return {
        os.path.relpath(d, root): os.path.join(d, "result.json")
        for d, _, files in os.walk(root)
        if "result.json" in files
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    args = parser.parse_args()
    fa, fb = result_files(args.run_a), result_files(args.run_b)
    for name in sorted(set(fa) & set(fb)):
        with open(fa[name]) as f, open(fb[name]) as g:
            equal, lines = differences(json.load(f), json.load(g))
        print(f"{name}: {equal} equal, {len(lines)} differ")
        print("\n".join(lines[:40]))
    print("key numbers (A | B): test BLEU, empty share, final valid loss")
    for name in sorted(set(fa) & set(fb)):
        with open(fa[name]) as f, open(fb[name]) as g:
            print(f"  {name}: " + " | ".join(key_numbers(json.load(h)) for h in (f, g)))
    print("only in A:", sorted(set(fa) - set(fb)))
    print("only in B:", sorted(set(fb) - set(fa)))
    ra, rb = (os.path.join(r, "results.json") for r in (args.run_a, args.run_b))
    if not (os.path.exists(ra) and os.path.exists(rb)):
        print("results.json: not in both runs (unfinished)")
        return
    with open(ra) as f, open(rb) as g:
        a, b = json.load(f), json.load(g)
    claims_a = {c.get("id"): c for c in a.get("claims", [])}
    claims_b = {c.get("id"): c for c in b.get("claims", [])}
    mark = {True: "✓", False: "✗", None: "—"}
    print("claims (A | B):")
    for key in list(claims_a) + [k for k in claims_b if k not in claims_a]:
        x, y = claims_a.get(key, {}), claims_b.get(key, {})
        verdict = "same" if x.get("passed") == y.get("passed") else "DIFF"
        va, vb = mark.get(x.get("passed"), "?"), mark.get(y.get("passed"), "?")
        print(f"  {verdict}  {va} | {vb}  {key}: {x.get('claim') or y.get('claim')}")
        for field in sorted(set(x) | set(y)):
            if x and y and x.get(field) != y.get(field):
                print(f"      {field}: {x.get(field)!r} -> {y.get(field)!r}")
    equal, lines = differences(
        {k: v for k, v in a.items() if k != "claims"}, {k: v for k, v in b.items() if k != "claims"}
    )
    print(f"results.json without the claims: {equal} equal, {len(lines)} differ")
    print("\n".join(lines))
    compare_figures(args.run_a, args.run_b)


def compare_figures(run_a: str, run_b: str) -> None:
    """Pixel by pixel, every PNG at the top of both runs (the report's figures)."""
    import matplotlib.image as mpimg  # optional heavy dependency: only here
    import numpy as np

    names = sorted(
        n for n in os.listdir(run_a) if n.endswith(".png") and os.path.exists(f"{run_b}/{n}")
    )
    for name in names:
        x, y = mpimg.imread(f"{run_a}/{name}"), mpimg.imread(f"{run_b}/{name}")
        if x.shape != y.shape:
            print(f"  figure {name}: DIFF shape {x.shape} -> {y.shape}")
            continue
        changed = float(np.mean(np.any(x != y, axis=-1))) if x.ndim == 3 else float(np.mean(x != y))
        print(
            f"  figure {name}: {'same pixels' if changed == 0 else f'DIFF {changed:.2%} of pixels'}"
        )
    only = sorted(
        set(n for n in os.listdir(run_a) if n.endswith(".png"))
        ^ set(n for n in os.listdir(run_b) if n.endswith(".png"))
    )
    print("  figures in one run only:", only)


if __name__ == "__main__":
    main()
