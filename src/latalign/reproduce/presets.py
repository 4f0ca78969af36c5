"""Presets (data, model and schedule sizes) and the experiments ``latalign reproduce`` runs.

Every schedule is in updates; losses are nats per target token. How the sizes were chosen,
and what they cost where they were measured: ``docs/reproduce.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

#: Experiments in run order. Criterion experiments train with the stack's ``train()``.
EXPERIMENTS: dict[str, str] = {
    "ce": "cross entropy (baseline)",
    "label_smoothed_ce": "label-smoothed cross entropy, ε = 0.1 (baseline)",
    "baseline": "the stack's cross-entropy recipe (the preset's baseline_recipe), or a "
    "finished run of it (--baseline RUN_DIR): the yardstick of 'cross entropy translates'",
    "ctc": "CTC at equal lengths m = n (§3)",
    "axe": "AXE, output layer tied to the decoder embedding (§4, the paper's setting)",
    "axe_untied": "AXE with a separate output layer (the tying finding)",
    "causal_axe": "causal AXE (§5)",
    "doubled_ctc": "CTC with m = 2(n+1) and every target token fed twice (beyond the paper)",
    "map": "every operator set with align × {sum, max} × {causal, not} (beyond the paper)",
}

#: criterion name and options of the criterion experiments
CRITERION_OF: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("ce", {}),
    "label_smoothed_ce": ("label_smoothed_ce", {"epsilon": 0.1}),
    "ctc": ("ctc", {}),
    "axe": ("axe", {}),
    "axe_untied": ("axe", {}),
    "causal_axe": ("causal_axe", {}),
}


@dataclass(frozen=True)
class Preset:
    """Sizes of one reproduction. ``updates`` maps an experiment to its number of updates
    (the map's informative objectives train as long as ``ce`` unless ``"map"`` is given)."""

    name: str
    description: str
    model_preset: str  # translate.config preset: tiny, small, paper
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig fields (not ``data``)
    needs_data: bool = False  # True: --data DIR is required
    lr: float = 2e-3
    warmup_updates: int = 50
    max_tokens: int = 1024
    updates: dict[str, int] = field(default_factory=dict)
    log_every: int = 10
    validate_every: int = 50
    beam: int = 5
    test_sentences: int = 200  # beam-decoded test sentences (0 = all)
    analysis_sentences: int = 200  # validation sentences for the alignment analysis (0 = all)
    figure_sentences: int = 3
    threads: int | None = None  # torch intra-op threads (None = torch's default)
    train_device: str = "cpu"  # TrainConfig.device of the criterion runs ("auto": CUDA if any)
    # experiments run when --experiments is not given (None = all of EXPERIMENTS)
    default_experiments: tuple[str, ...] | None = None
    # the stack's real cross-entropy recipe (a TrainConfig file, relative to the repository
    # root) that the "baseline" experiment trains unless --baseline RUN_DIR reuses a run of it
    baseline_recipe: str | None = None
    # "cross entropy translates" needs this test BLEU (beam) from the baseline(s)
    baseline_min_bleu: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float) -> Preset:
        """A copy with every schedule (updates, warm-up, validation interval) multiplied by
        ``factor`` (at least 1 update)."""
        return replace(
            self,
            updates={k: max(1, round(v * factor)) for k, v in self.updates.items()},
            warmup_updates=max(1, round(self.warmup_updates * factor)),
            validate_every=max(1, round(self.validate_every * factor)),
        )

    def with_updates(self, updates: dict[str, int]) -> Preset:
        """A copy with some experiments' updates replaced (``{"axe": 100}``)."""
        return replace(self, updates={**self.updates, **updates})


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        name="quick",
        description="built-in synthetic corpus, tiny model (2+2 layers, d=64): every claim "
        "and both studies on a 2-core CPU in about 26 minutes (measured 2026-12-03)",
        model_preset="tiny",
        model={"dropout": 0.1},
        data={"synthetic_size": 10000, "synthetic_eval_size": 200, "vocab_size": 600},
        # lr, warm-up, tokens per batch, logging and sentence counts: the Preset defaults
        updates=dict(ce=450, label_smoothed_ce=450, ctc=450, axe=300, axe_untied=300,
                     causal_axe=450, doubled_ctc=450),
        threads=1,
        default_experiments=tuple(k for k in EXPERIMENTS if k != "baseline"),
    ),
    "multi30k": Preset(
        name="multi30k",
        description="Multi30k de-en (--data DIR), the small model (3+3 layers, d=256) on CPU: "
        "the paper's experiments in about 34 minutes on 2 CPU cores (measured 2026-11-30), the "
        "cross-entropy recipe (configs/multi30k_small_40min.toml: 40 more minutes, or "
        "--baseline RUN_DIR to reuse a finished run of it; it also teaches the nat group), beam "
        "decoding of the whole test set, and the groups beyond_tf (measured 60 min) and nat "
        "(six NAT students of 40 minutes each from configs/multi30k_nat_*_40min.toml, the "
        "teacher's budget, one after another: about 4 h 15 min with distillation and decoding; "
        "interrupted, it resumes each student where it stopped) unless --experiments leaves "
        "them out: about 6 h 30 min in all (the map only when asked: --experiments ...,map: "
        "its 12 informative objectives train as long as ce, about 12 x ce's time more)",
        model_preset="small",
        data={"vocab_size": 8000, "src": "de", "tgt": "en"},
        needs_data=True,
        lr=5e-4,
        warmup_updates=200,
        max_tokens=2048,
        # one epoch is ~230 updates of 2048 tokens; AXE runs past it (the epoch claim), the
        # baselines ~2.6 epochs, CTC (= CE) and the doubled CTC long enough for their optimum
        updates=dict(ce=600, label_smoothed_ce=600, ctc=200, axe=300, axe_untied=400,
                     causal_axe=300, doubled_ctc=200),
        validate_every=100,
        test_sentences=0,
        analysis_sentences=0,
        default_experiments=tuple(k for k in EXPERIMENTS if k != "map"),
        baseline_recipe="configs/multi30k_small_40min.toml",
        baseline_min_bleu=35.0,
    ),
    "paper": Preset(
        name="paper",
        description="the paper's model (fairseq transformer_iwslt_de_en) and schedule, for a "
        "GPU; any data directory (IWSLT'14 de-en as fairseq prepares it)",
        model_preset="paper",
        data={"vocab_size": 10000, "src": "de", "tgt": "en"},
        needs_data=True,
        lr=5e-4,
        warmup_updates=4000,
        max_tokens=4096,
        updates={k: 50000 for k in EXPERIMENTS if k not in ("baseline", "map")},
        log_every=100,
        validate_every=1000,
        test_sentences=0,
        analysis_sentences=0,
        train_device="auto",
        default_experiments=tuple(k for k in EXPERIMENTS if k != "baseline"),
    ),
    "ci": Preset(
        name="ci",
        description="a smoke test: tiny everything (checks the pipeline, not the paper)",
        model_preset="tiny",
        model={"dropout": 0.0, "encoder_layers": 1, "decoder_layers": 1, "d_model": 32,
               "ffn_dim": 64},
        data={"synthetic_size": 300, "synthetic_eval_size": 16, "vocab_size": 200},
        lr=3e-3,
        warmup_updates=5,
        max_tokens=512,
        updates={k: 12 for k in EXPERIMENTS if k != "map"},
        log_every=2,
        validate_every=6,
        beam=2,
        test_sentences=16,
        analysis_sentences=16,
        figure_sentences=2,
        threads=1,
        default_experiments=tuple(k for k in EXPERIMENTS if k != "baseline"),
    ),
}  # fmt: skip


@dataclass
class ReproduceOptions:
    """What :func:`latalign.reproduce.run_reproduction` runs.

    Attributes:
        out: the run directory (one subdirectory per experiment; ``report.md`` etc.).
        preset: ``quick`` (default), ``multi30k``, ``paper`` or ``ci``.
        data: data directory (required by ``multi30k``/``paper``; ``quick`` uses the synthetic
            corpus and refuses ``data``).
        experiments: subset of :data:`EXPERIMENTS` (None = the preset's
            ``default_experiments``: all but the map for ``multi30k``, all otherwise).
        map_objectives: subset of map objective keys (``"align+delimiter/sum/causal"``;
            None = all 32).
        seed: model/batch-order seed (the synthetic corpus is fixed).
        force: redo experiments even when finished.
        scale: multiply every schedule (for smoke tests and longer runs).
        progress: per-experiment progress lines on stderr.
        cache_dir: tokenizer/binarized-data cache (None = the stack's default).
        command: the command line recorded in the report.
        updates: per-experiment updates overriding the (scaled) preset, e.g. ``{"axe": 100}``
            (``"map"``: each map objective).
        threads: torch intra-op threads (None = the preset's choice: 1 for ``quick``/``ci``,
            where a tiny model gains little from a second thread and loses a lot when the
            machine is shared).
        map_workers: processes training map objectives side by side (None = 2 on a 2+-core
            machine when the preset runs on one thread, else 1). Results do not depend on it.
        baseline: a finished run directory of the preset's cross-entropy recipe (checkpoint,
            ``config.json``, ``tokenizer/``, trained on the same data) that the ``baseline``
            experiment evaluates instead of training the recipe.
        device: training device, ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (None = the
            preset's ``train_device``).
    """

    out: str | Path = "runs/reproduce"
    preset: str = "quick"
    data: str | Path | None = None
    experiments: list[str] | None = None
    map_objectives: list[str] | None = None
    seed: int = 1
    force: bool = False
    scale: float = 1.0
    progress: bool = True
    cache_dir: str | Path | None = None
    command: str = ""
    threads: int | None = None
    updates: dict[str, int] | None = None
    map_workers: int | None = None
    baseline: str | Path | None = None
    device: str | None = None
