"""Running one experiment: train (or reuse/resume), decode the test set, analyse validation.

Each experiment lives in ``{out}/{name}/``: the stack's run directory ``train/`` (checkpoints,
``log.jsonl``; an interrupted run resumes from ``checkpoint_last.pt``), ``hyps.test.txt`` and
``result.json``, written last, which marks the experiment finished. ``result.json`` holds the
experiment's ``spec`` (preset, seed, data): a rerun with the same spec reuses it; a different
spec is refused unless ``force``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import latalign as la
from latalign.align.backends import set_numba_threads
from latalign.io import atomic_write
from latalign.reproduce import analysis as an
from latalign.reproduce.presets import CRITERION_OF, Preset
from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.data import DataConfig, PreparedData, prepare_data
from latalign.translate.decode import translate_sentences
from latalign.translate.doubled import double_inputs, doubled_greedy_decode
from latalign.translate.metrics import evaluate_translations
from latalign.translate.run import load_run
from latalign.translate.runlog import read_log
from latalign.translate.train import TrainConfig, default_cache_dir, train

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

logger = logging.getLogger("latalign.reproduce")

RESULT_FILE = "result.json"
MAP_REFERENCE = "align/sum/noncausal"  # = cross entropy at m = n: the map's yardstick


def objective_key(operators: tuple[str, ...], aggregate: str, causal: bool) -> str:
    """``"align+clone_prediction+delimiter/max/noncausal"``."""
    return f"{'+'.join(operators)}/{aggregate}/{'causal' if causal else 'noncausal'}"


def parse_objective_key(key: str) -> tuple[tuple[str, ...], str, bool]:
    """Inverse of :func:`objective_key`; ``ValueError`` on a malformed key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[1] not in ("sum", "max") or parts[2] not in ("causal", "noncausal"):
        raise ValueError(
            f"expected a map objective like 'align+delimiter/sum/causal'; found {key!r}"
        )
    ops = tuple(parts[0].split("+"))
    if ops not in an.operator_subsets():
        raise ValueError(
            f"expected an operator set containing align, in canonical order "
            f"(align, clone_target, clone_prediction, delimiter); found {parts[0]!r}"
        )
    return ops, parts[1], parts[2] == "causal"


def all_map_objectives() -> list[str]:
    """The 32 objective keys: 8 operator sets × {sum, max} × {noncausal, causal}."""
    return [
        objective_key(ops, agg, causal)
        for causal in (False, True)
        for ops in an.operator_subsets()
        for agg in ("sum", "max")
    ]


@dataclass
class Context:
    """Shared state of one reproduction."""

    out: Path
    preset: Preset
    seed: int
    data_dir: str | None
    force: bool
    progress: bool
    cache_dir: Path
    map_workers: int = 1  # processes training map objectives side by side
    threads: int | None = None  # torch/numba threads of each map worker process
    baseline: Path | None = None  # a finished run of the CE recipe to evaluate (--baseline)
    _data: PreparedData | None = field(default=None, repr=False)

    def data_config(self) -> DataConfig:
        return DataConfig(data=self.data_dir, **self.preset.data)

    @property
    def data(self) -> PreparedData:
        if self._data is None:
            self._data = prepare_data(self.data_config(), self.cache_dir)
        return self._data

    def spec(self, experiment: str) -> dict[str, Any]:
        """What a finished result depends on (compared on reuse)."""
        return {
            "experiment": experiment,
            "preset": preset_settings(self.preset.to_dict()),
            "seed": self.seed,
            "data": self.data_dir,
        }


def preset_settings(preset: dict[str, Any]) -> dict[str, Any]:
    """A preset's fields without its description: documentation, not a setting, so editing it
    must not invalidate finished runs (results saved before this rule still carry it)."""
    return {k: v for k, v in preset.items() if k != "description"}


def check_reusable(directory: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The saved result if ``directory`` holds a finished experiment with this ``spec``;
    None if unfinished; ``ValueError`` if finished with another spec."""
    path = directory / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    # compare as JSON (tuples in the preset come back as lists)
    theirs = saved.get("spec")
    if isinstance(theirs, dict) and isinstance(theirs.get("preset"), dict):
        theirs = theirs | {"preset": preset_settings(theirs["preset"])}
    if theirs != json.loads(json.dumps(spec, default=_json_default)):
        raise ValueError(
            f"expected {directory} to hold this experiment with the same preset, seed and data; "
            "found a different one (use --force to redo it, or another --out)"
        )
    return saved["result"]


def write_result(directory: Path, spec: dict[str, Any], result: dict[str, Any]) -> None:
    text = json.dumps({"spec": spec, "result": result}, indent=1, default=_json_default)
    atomic_write(directory / RESULT_FILE, text)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def prepare_dir(directory: Path, force: bool) -> None:
    if force and directory.exists():
        shutil.rmtree(directory)


# --------------------------------------------------------------------------- training


def train_config(
    ctx: Context,
    run_dir: Path,
    criterion: str,
    options: dict[str, Any],
    updates: int,
    model: dict[str, Any] | None = None,
) -> TrainConfig:
    p = ctx.preset
    return TrainConfig(
        run_dir=str(run_dir),
        data=ctx.data_config(),
        preset=p.model_preset,
        model={**p.model, **(model or {})},
        criterion=criterion,
        **options,
        lr=p.lr,
        warmup_updates=p.warmup_updates,
        max_tokens=p.max_tokens,
        max_updates=updates,
        validate_every=p.validate_every,
        log_every=p.log_every,
        seed=ctx.seed,
        device=p.train_device,
        cache_dir=str(ctx.cache_dir),
    )


def full_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's ``log.jsonl`` (resumptions included), one per (kind, step)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in read_log(path):
        seen[(rec.get("kind", ""), int(rec.get("step", 0)))] = rec
    return sorted(seen.values(), key=lambda r: (r["step"], r.get("kind") != "train"))


def updates_per_epoch(ctx: Context) -> int:
    d = ctx.data
    return len(
        TokenBatchSampler(
            d.train.src_sizes, d.train.tgt_sizes, max_tokens=ctx.preset.max_tokens, seed=ctx.seed
        )
    )


def train_target_tokens(ctx: Context) -> int:
    """Target tokens (eos counted) of one epoch of the training set."""
    return int(ctx.data.train.tgt_sizes.sum())


def _curves(history: list[dict[str, Any]], per_epoch: int, epoch_tokens: int) -> dict[str, Any]:
    """Loss curves and the first crossings of 0.1 nats/token, in updates, this corpus's
    epochs, target tokens seen and the paper's epochs (:func:`analysis.first_crossing`)."""
    train_c = [(r["step"], r["train_loss"]) for r in history if r.get("kind") == "train"]
    valid_c = [
        (r["step"], r["valid_loss"], r.get("valid_ce")) for r in history if r.get("kind") == "valid"
    ]
    per_update = epoch_tokens / max(per_epoch, 1)
    kw = {"updates_per_epoch": per_epoch, "tokens_per_update": per_update}
    train_r = [r for r in history if r.get("kind") == "train"]
    valid_r = [r for r in history if r.get("kind") == "valid"]
    return {
        "train_curve": train_c,
        "valid_curve": valid_c,
        "updates_per_epoch": per_epoch,
        "epoch_target_tokens": epoch_tokens,
        "target_tokens_per_update": per_update,
        "first_train_below_0.1": an.first_crossing(train_r, "train_loss", 0.1, **kw),
        "first_valid_below_0.1": an.first_crossing(valid_r, "valid_loss", 0.1, **kw),
    }


# --------------------------------------------------------------------------- analysis


def _subset(n: int, limit: int) -> list[int]:
    return list(range(n if limit <= 0 else min(n, limit)))


@torch.no_grad()
def analyse_validation(
    model: torch.nn.Module,
    ctx: Context,
    *,
    causal: bool,
    doubled: bool = False,
    figures: bool = True,
) -> dict[str, Any]:
    """Teacher-forced analysis of the validation sentences (nats, probabilities in [0, 1]):
    mean ``p_j(y_{j−1})``, CTC vs CE per sentence, AXE best paths and AXE losses (``causal``
    as given) with the loss-floor check on the same sentences, mean target length, and the
    data of Figure 3 and of the heat map. ``n_sentences``/``n_valid`` say which sentences."""
    data, tok = ctx.data, ctx.data.tokenizer
    model.eval()
    idx = _subset(len(data.valid), ctx.preset.analysis_sentences)
    copy_sum = copy_n = 0.0
    ctc_l, ce_l, reps, paths, lengths = [], [], [], [], []
    axe_l, targets, alphas = [], [], []
    figs: list[dict[str, Any]] = []
    want = ctx.preset.figure_sentences if figures else 0
    for start in range(0, len(idx), 32):
        batch = collate([data.valid[i] for i in idx[start : start + 32]])
        L = batch.target_lengths
        if doubled:
            prev = double_inputs(batch.prev_output_tokens)
            logits = model(batch.src_tokens, batch.src_lengths, prev)
            s, c = _copy_doubled(logits, prev, 2 * L)
            copy_sum, copy_n = copy_sum + s, copy_n + c
            lengths += L.tolist()
            continue
        logits = model(batch.src_tokens, batch.src_lengths, batch.prev_output_tokens)
        s, c = an.copy_probability(logits, batch.prev_output_tokens, L)
        copy_sum, copy_n = copy_sum + s, copy_n + c
        cc = an.ctc_versus_ce(logits, batch.target, L, tok.blank_id)
        ctc_l += cc["ctc"]
        ce_l += cc["ce"]
        reps += cc["repeats"]
        best = la.best_alignment(
            logits.float(), batch.target, L, L, blank=tok.blank_id, causal=causal, from_logits=True
        )  # fmt: skip
        paths += [b.operators for b in best]
        alphas += [b.alpha for b in best]
        axe_l += la.axe_loss(
            logits.float(), batch.target, L, L, blank=tok.blank_id, causal=causal,
            reduction="none", zero_infinity=True, from_logits=True,
        ).tolist()  # fmt: skip
        targets += [batch.target[b, : int(L[b])].tolist() for b in range(len(L))]
        lengths += L.tolist()
    if want and not doubled:
        figs = _figures(model, ctx, _figure_sentences(data.valid, idx, want), causal)
    out: dict[str, Any] = {
        "n_sentences": len(idx),
        "n_valid": len(data.valid),
        "mean_target_length": sum(lengths) / max(len(lengths), 1),
        "copy_probability": copy_sum / max(copy_n, 1.0),
        "copy_positions": int(copy_n),
    }
    if not doubled:
        out["ctc_vs_ce"] = an.summarize_ctc_versus_ce(ctc_l, ce_l, reps)
        out["paths"] = an.path_shares(paths, lengths)
        out["paths"]["causal"] = causal
        out["floor"] = an.loss_floor_check(axe_l, targets, alphas, paths)
        out["figures"] = figs
    return out


def _copy_doubled(logits: torch.Tensor, prev: torch.Tensor, lengths: torch.Tensor):
    """Mean ``p_t(x_t)`` over positions ``t ≥ 3`` of the doubled input (input is a target
    token there)."""
    probs = torch.softmax(logits.float(), dim=-1)
    p_in = probs.gather(-1, prev.unsqueeze(-1)).squeeze(-1)
    pos = torch.arange(logits.size(1))[None, :]
    mask = (pos >= 2) & (pos < lengths[:, None])
    return float(p_in[mask].sum()), int(mask.sum())


def _figure_sentences(valid: Any, idx: list[int], k: int) -> list[int]:
    """``k`` short validation sentences for Figure 3 (the shortest with >= 6 target tokens,
    else the shortest), in corpus order."""
    sizes = [(int(valid.tgt_sizes[i]), i) for i in idx]
    pool = [x for x in sizes if x[0] >= 6] or sizes
    return sorted(i for _, i in sorted(pool)[:k])


@torch.no_grad()
def _figures(model: Any, ctx: Context, ids: list[int], causal: bool) -> list[dict[str, Any]]:
    if not ids:
        return []
    tok = ctx.data.tokenizer
    batch = collate([ctx.data.valid[i] for i in ids])
    L = batch.target_lengths
    logits = model(batch.src_tokens, batch.src_lengths, batch.prev_output_tokens)
    best = la.best_alignment(
        logits.float(), batch.target, L, L, blank=tok.blank_id, causal=causal, from_logits=True
    )
    return [
        _figure_data(logits[b], batch.target[b], int(L[b]), best[b], tok)
        | {"index": ids[b], "source": ctx.data.valid.raw_src[ids[b]]}
        for b in range(len(ids))
    ]


def _figure_data(
    logits: torch.Tensor, target: torch.Tensor, n: int, best: Any, tok: Any
) -> dict[str, Any]:
    probs = torch.softmax(logits.float(), dim=-1)[:n]  # (L, V)
    tgt = target[:n].tolist()
    matrix = probs[:, tgt].T.tolist()  # [i][j] = p_{j+1}(y_{i+1})
    return {
        "target": [tok.id_to_piece(t) for t in tgt],
        "top4": an.top_k_table(logits, 4, tok.id_to_piece, n),
        "alpha": [list(a) for a in best.alpha],
        "operators": list(best.operators),
        "p_target": matrix,
        "p_blank": probs[:, tok.blank_id].tolist(),
    }


def evaluate_test(
    model: torch.nn.Module, ctx: Context, limit: int, beam: int, directory: Path,
    translate: Callable[..., list[str]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Decode the first ``limit`` test sentences (0 = all) and score them (BLEU, chrF, empty
    share after removing ε); writes ``hyps.test.txt``."""
    test = ctx.data.test
    idx = _subset(len(test), limit)
    src = [test.raw_src[i] for i in idx]
    refs = [test.raw_tgt[i] for i in idx]
    if translate is None:
        hyps = translate_sentences(model, ctx.data.tokenizer, src, beam=beam, batch_size=50)
    else:
        hyps = translate(model, ctx.data.tokenizer, src)
    atomic_write(directory / "hyps.test.txt", "".join(h + "\n" for h in hyps))
    scores = evaluate_translations(hyps, refs)
    keep = ("bleu", "chrf", "empty_share", "length_ratio", "n_sentences", "bleu_signature")
    return {k: scores[k] for k in keep} | {
        "beam": beam, "n_test": len(test), "examples": list(zip(src, refs, hyps))[:3],
    }  # fmt: skip


# --------------------------------------------------------------------------- experiments


def _load_last(run_dir: Path) -> torch.nn.Module:
    from latalign.translate.checkpoint import checkpoint_paths

    return load_run(checkpoint_paths(run_dir)[0]).model


def run_criterion_experiment(name: str, ctx: Context) -> dict[str, Any]:
    """Train ``name`` (a key of :data:`CRITERION_OF`), decode the test set with beam search,
    analyse validation. Returns the result dict (also written to ``result.json``)."""
    directory = ctx.out / name
    spec = ctx.spec(name)
    prepare_dir(directory, ctx.force)
    saved = check_reusable(directory, spec)
    if saved is not None:
        logger.info("%s: finished earlier, reusing %s", name, directory / RESULT_FILE)
        return saved
    criterion, options = CRITERION_OF[name]
    model_overrides = {"tie_output": False} if name == "axe_untied" else {}
    run_dir = directory / "train"
    cfg = train_config(ctx, run_dir, criterion, options, ctx.preset.updates[name], model_overrides)
    t0 = time.monotonic()
    logger.info("%s: training %d updates (%s)", name, cfg.max_updates, run_dir)
    res = train(cfg, progress=ctx.progress)
    train_s = time.monotonic() - t0
    model = _load_last(run_dir)
    history = full_history(run_dir)
    last_train = [r for r in history if r.get("kind") == "train"]
    t1 = time.monotonic()
    logger.info("%s: beam-%d decoding of the test set", name, ctx.preset.beam)
    test = evaluate_test(model, ctx, ctx.preset.test_sentences, ctx.preset.beam, directory)
    analysis = analyse_validation(model, ctx, causal=(name == "causal_axe"))
    result = {
        "name": name,
        "criterion": criterion,
        "options": options,
        "tied_output": bool(model.cfg.share_decoder_input_output_embed),
        "updates": res.step,
        "final_valid_loss": res.final.get("valid_loss"),
        "final_valid_ce": res.final.get("valid_ce"),
        "final_train_loss": last_train[-1]["train_loss"] if last_train else None,
        **_curves(history, updates_per_epoch(ctx), train_target_tokens(ctx)),
        "test": test,
        "analysis": analysis,
        "seconds": {"train": train_s, "eval": time.monotonic() - t1},
    }
    return _finish(directory, spec, name, result, t0)


def _finish(
    directory: Path, spec: Any, name: str, result: dict[str, Any], t0: float
) -> dict[str, Any]:
    """Write an experiment's result (last, so a crash leaves it unfinished) and log a summary."""
    write_result(directory, spec, result)
    test = result["test"]
    logger.info(
        "%s: done in %.0f s (valid loss %.3f nats/token, BLEU %.1f, empty %.0f%%)",
        name, time.monotonic() - t0, result["final_valid_loss"], test["bleu"],
        100 * test["empty_share"],
    )  # fmt: skip
    return result


def run_doubled_experiment(ctx: Context) -> dict[str, Any]:
    """Doubled CTC (regime ``doubled`` + criterion ``doubled_ctc`` of the one ``train()``;
    see :mod:`latalign.translate.doubled`)."""
    name = "doubled_ctc"
    directory = ctx.out / name
    spec = ctx.spec(name)
    prepare_dir(directory, ctx.force)
    saved = check_reusable(directory, spec)
    if saved is not None:
        logger.info("%s: finished earlier, reusing %s", name, directory / RESULT_FILE)
        return saved
    p = ctx.preset
    run_dir = directory / "train"
    cfg = train_config(ctx, run_dir, "doubled_ctc", {"regime": "doubled"}, p.updates[name])
    t0 = time.monotonic()
    logger.info("%s: training %d updates (%s)", name, cfg.max_updates, cfg.run_dir)
    res = train(cfg, progress=ctx.progress)
    train_s = time.monotonic() - t0
    model = _load_last(run_dir)
    history = full_history(run_dir)
    decode = partial(doubled_greedy_decode, blank_id=ctx.data.tokenizer.blank_id)
    t1 = time.monotonic()
    test = evaluate_test(
        model, ctx, p.test_sentences, 1, directory,
        translate=lambda m, tok, src: translate_sentences(m, tok, src, decode_batch=decode),
    )  # fmt: skip
    analysis = analyse_validation(model, ctx, causal=False, doubled=True, figures=False)
    last_train = [r for r in history if r.get("kind") == "train"]
    result = {
        "name": name,
        "criterion": "ctc (m = 2L, inputs doubled)",
        "updates": res.step,
        "final_valid_loss": res.final.get("valid_loss"),
        "final_train_loss": last_train[-1]["train_loss"] if last_train else None,
        **_curves(history, updates_per_epoch(ctx), train_target_tokens(ctx)),
        "test": test,
        "analysis": analysis,
        "seconds": {"train": train_s, "eval": time.monotonic() - t1},
    }
    return _finish(directory, spec, name, result, t0)


def recipe_path(preset: Preset) -> Path:
    """The preset's cross-entropy recipe file; ``ValueError`` when the preset has none or the
    file is missing (e.g. an installed package without the repository's ``configs/``)."""
    if preset.baseline_recipe is None:
        raise ValueError(
            f"expected --baseline RUN_DIR for the baseline experiment of preset "
            f"{preset.name!r} (it has no cross-entropy recipe to train); found none"
        )
    path = Path(la.__file__).resolve().parents[2] / preset.baseline_recipe
    if not path.is_file():
        raise ValueError(
            f"expected the cross-entropy recipe at {path}; found none — give --baseline RUN_DIR "
            "(a finished run of it)"
        )
    return path


def check_baseline_run(run_dir: Path, preset: Preset) -> dict[str, Any]:
    """Check, before any work, that ``run_dir`` is a finished cross-entropy run on the
    preset's data: a directory with ``config.json`` (criterion ce or label_smoothed_ce; the
    preset's languages and vocabulary size), a checkpoint and ``tokenizer/``. Returns the saved
    config; ``ValueError`` naming what is missing or different otherwise. (The tokenizer
    fingerprint is compared with the prepared data's by :func:`check_baseline_tokenizer`.)"""
    from latalign.translate.checkpoint import checkpoint_paths

    if not run_dir.is_dir():
        raise ValueError(f"expected --baseline to be a run directory; found no directory {run_dir}")
    cfg_file = run_dir / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        raise ValueError(
            f"expected a training run's config.json in --baseline {run_dir}; found none or an "
            "unreadable one"
        ) from None
    if not any(p.is_file() for p in checkpoint_paths(run_dir)):
        raise ValueError(f"expected a checkpoint in {run_dir}/checkpoints; found none")
    if not (run_dir / "tokenizer").is_dir():
        raise ValueError(f"expected the run's tokenizer/ in {run_dir}; found none")
    if cfg.get("criterion") not in ("ce", "label_smoothed_ce"):
        raise ValueError(
            f"expected a cross-entropy run (criterion ce or label_smoothed_ce) in --baseline; "
            f"found criterion {cfg.get('criterion')!r}"
        )
    data = cfg.get("data") or {}
    for key in ("src", "tgt", "vocab_size"):
        want = preset.data.get(key)
        if want is not None and data.get(key) != want:
            raise ValueError(
                f"expected the baseline run's data {key} = {want!r} (preset {preset.name!r}); "
                f"found {data.get(key)!r} in {cfg_file}"
            )
    return cfg


def check_baseline_tokenizer(ctx: Context) -> None:
    """``ValueError`` unless the baseline run's tokenizer is the prepared data's (the same
    corpus and BPE settings give the same fingerprint)."""
    from latalign.translate.tokenizer import Tokenizer

    if ctx.baseline is None:
        raise ValueError("expected a --baseline RUN_DIR to check; found none")
    theirs = Tokenizer.load(ctx.baseline / "tokenizer").fingerprint
    ours = ctx.data.tokenizer.fingerprint
    if theirs != ours:
        raise ValueError(
            f"expected the baseline run to be trained on this data (tokenizer {ours[:12]}); "
            f"found tokenizer {theirs[:12]} in {ctx.baseline} — another corpus or BPE size"
        )


def run_baseline_experiment(ctx: Context) -> dict[str, Any]:
    """The stack's cross-entropy recipe: evaluate the finished run ``ctx.baseline`` or train
    the preset's recipe into ``{out}/baseline/train``; decode the test set (beam, the
    checkpoint ``latalign evaluate`` uses: best, else last)."""
    name = "baseline"
    directory = ctx.out / name
    spec = baseline_spec(ctx)
    prepare_dir(directory, ctx.force)
    saved = check_reusable(directory, spec)
    if saved is not None:
        logger.info("%s: finished earlier, reusing %s", name, directory / RESULT_FILE)
        return saved
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if ctx.baseline is not None:
        run_dir, source = ctx.baseline, f"finished run {ctx.baseline}"
        logger.info("%s: evaluating the finished run %s", name, run_dir)
    else:
        recipe = recipe_path(ctx.preset)
        run_dir, source = directory / "train", f"trained here from {ctx.preset.baseline_recipe}"
        cfg = TrainConfig.from_file(
            recipe, run_dir=str(run_dir), data=ctx.data_dir, seed=ctx.seed,
            cache_dir=str(ctx.cache_dir), device=ctx.preset.train_device,
        )  # fmt: skip
        logger.info("%s: training the recipe %s (%s)", name, recipe, run_dir)
        train(cfg, progress=ctx.progress)
    train_s = time.monotonic() - t0
    loaded = load_run(run_dir)
    model, state = loaded.model, {"step": loaded.step}
    history = full_history(run_dir)
    saved_cfg = json.loads((run_dir / "config.json").read_text())
    last_train = [r for r in history if r.get("kind") == "train"]
    last_valid = [r for r in history if r.get("kind") == "valid"]
    t1 = time.monotonic()
    logger.info("%s: beam-%d decoding of the test set", name, ctx.preset.beam)
    test = evaluate_test(model, ctx, ctx.preset.test_sentences, ctx.preset.beam, directory)
    result = {
        "name": name,
        "source": source,
        "run_dir": str(run_dir),
        "criterion": saved_cfg.get("criterion"),
        "recipe": ctx.preset.baseline_recipe,
        "updates": int(state.get("step", last_train[-1]["step"] if last_train else 0)),
        "final_valid_loss": last_valid[-1]["valid_loss"] if last_valid else None,
        "final_valid_ce": last_valid[-1].get("valid_ce") if last_valid else None,
        "final_train_loss": last_train[-1]["train_loss"] if last_train else None,
        "test": test,
        "seconds": {"train": train_s, "eval": time.monotonic() - t1},
    }
    write_result(directory, spec, result)
    logger.info("%s: BLEU %.2f on %d test sentences", name, test["bleu"], test["n_sentences"])
    return result


def baseline_spec(ctx: Context) -> dict[str, Any]:
    """What the baseline result depends on: the usual spec and the reused run (if any)."""
    return ctx.spec("baseline") | {
        "baseline_run": None if ctx.baseline is None else str(ctx.baseline.resolve())
    }


def map_dir(ctx: Context, key: str) -> Path:
    """The directory of one map objective (``align+delimiter/sum/causal`` ->
    ``map/align-delimiter__sum__causal``)."""
    return ctx.out / "map" / key.replace("/", "__").replace("+", "-")


def run_map_objective(key: str, ctx: Context) -> dict[str, Any]:
    """Train one objective of the map briefly; greedy-decode test sentences."""
    ops, aggregate, causal = parse_objective_key(key)
    directory = map_dir(ctx, key)
    spec = ctx.spec(f"map:{key}")
    prepare_dir(directory, ctx.force)
    saved = check_reusable(directory, spec)
    if saved is not None:
        return saved
    run_dir = directory / "train"
    options = {"operators": ops, "aggregate": aggregate, "causal": causal}
    cfg = train_config(ctx, run_dir, "latent", options, ctx.preset.updates["map"])
    t0 = time.monotonic()
    res = train(cfg, progress=False)
    model = _load_last(run_dir)
    test = evaluate_test(model, ctx, ctx.preset.map_eval_sentences, 1, directory)
    history = full_history(run_dir)
    last_train = [r for r in history if r.get("kind") == "train"]
    pred = an.predict_objective(ops, causal)
    result = {
        "key": key,
        "operators": list(ops),
        "aggregate": aggregate,
        "causal": causal,
        "updates": res.step,
        "final_valid_loss": res.final.get("valid_loss"),
        "final_valid_ce": res.final.get("valid_ce"),
        "final_train_loss": last_train[-1]["train_loss"] if last_train else None,
        "bleu": test["bleu"],
        "chrf": test["chrf"],
        "empty_share": test["empty_share"],
        "n_test_sentences": test["n_sentences"],
        "n_test": test["n_test"],
        "predicted": "degenerate" if pred.degenerate else "healthy",
        "prediction_note": pred.note(),
        "only_trivial_path": pred.only_trivial_path,
        "seconds": time.monotonic() - t0,
    }
    write_result(directory, spec, result)
    return result


def _map_worker_init(threads: int) -> None:
    """A map worker process: ``threads`` torch and numba threads, denormals flushed (as the
    parent sets for its own training)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    logging.basicConfig(level=logging.WARNING)
    set_numba_threads(threads)


@contextmanager
def spawn_pool(ctx: Context, workers: int) -> Iterator[tuple[ProcessPoolExecutor, Context]]:
    """``workers`` spawned processes, each set up by :func:`_map_worker_init`, and a copy of
    ``ctx`` to send them: the tokenizer and data are prepared here once (the workers then hit
    the cache) and the copy carries none of it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx.data  # noqa: B018 - prepare the tokenizer and data once; workers hit the cache
    light = replace(ctx, _data=None)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_map_worker_init,
        initargs=(ctx.threads or 1,),
    ) as pool:
        yield pool, light


def run_map(ctx: Context, keys: list[str]) -> dict[str, Any]:
    """All objectives of ``keys`` (the reference ``align/sum/noncausal`` is always run) and
    their classification against the reference."""
    if MAP_REFERENCE not in keys:
        keys = [MAP_REFERENCE, *keys]
    t0 = time.monotonic()
    by_key: dict[str, dict[str, Any]] = {}

    def done(row: dict[str, Any]) -> None:
        by_key[row["key"]] = row
        logger.info(
            "map %d/%d %s: valid %.3f nats/token, greedy BLEU %.1f, empty %.0f%%",
            len(by_key), len(keys), row["key"], row["final_valid_loss"], row["bleu"],
            100 * row["empty_share"],
        )  # fmt: skip

    todo = list(keys)
    if not ctx.force:  # finished objectives are reused here, without starting workers
        todo = []
        for key in keys:
            saved = check_reusable(map_dir(ctx, key), ctx.spec(f"map:{key}"))
            if saved is None:
                todo.append(key)
            else:
                done(saved)
    workers = min(ctx.map_workers, len(todo))
    if workers > 1:
        from concurrent.futures import as_completed

        with spawn_pool(ctx, workers) as (pool, light):
            futures = [pool.submit(run_map_objective, key, light) for key in todo]
            for fut in as_completed(futures):
                done(fut.result())
    else:
        for key in todo:
            done(run_map_objective(key, ctx))
    rows = [by_key[k] for k in keys]
    return {"rows": rows, **classify_map(rows), "seconds": time.monotonic() - t0}


def classify_map(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Classify each map row against the reference row (``MAP_REFERENCE``, cross entropy
    trained as long) in place (``measured``, ``agrees``, ``informative``) and summarise.

    A row is *informative* unless its objective has only the trivial path at ``m = n``
    (then it is cross entropy by construction and agrees trivially) — the reference is one of
    those. The BLEU clause of the rule is used only when the reference's greedy BLEU is at
    least 20; the teacher-forced cross-entropy clause works at any length.
    """
    ref = next(r for r in rows if r["key"] == MAP_REFERENCE)
    for r in rows:
        r["measured"] = an.classify_measured(
            r["final_valid_loss"], r["empty_share"], r["bleu"],
            reference_loss=ref["final_valid_loss"], reference_bleu=ref["bleu"],
            ce=r.get("final_valid_ce"), reference_ce=ref.get("final_valid_ce"),
        )  # fmt: skip
        r["agrees"] = r["measured"] == r["predicted"]
        r["informative"] = not r["only_trivial_path"]
    bleu_used = ref["bleu"] >= 20.0
    info = [r for r in rows if r["informative"]]
    return {
        "reference": MAP_REFERENCE,
        "rule": "degenerate = valid loss < 0.25 × the reference's (cross entropy trained as long) "
        "and (empty share ≥ 0.5 or teacher-forced valid CE ≥ 2 × the reference's"
        + (" or greedy BLEU < 0.5 × the reference's" if bleu_used else "")
        + ")"
        + ("" if bleu_used else f"; the BLEU clause is off: the reference's greedy BLEU "
           f"{ref['bleu']:.1f} < 20 decides nothing"),
        "bleu_clause": bleu_used,
        "agreement": sum(r["agrees"] for r in rows) / len(rows),
        "informative": len(info),
        "informative_agree": sum(r["agrees"] for r in info),
    }  # fmt: skip


def default_cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir()
