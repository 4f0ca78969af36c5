"""The exploit the paper argued but never ran (§5, "This exploit is not unique to AXE"):
real CTC with the prediction sequence doubled and every target token fed twice.

Layout (target ``y_1 … y_n eos``, ``L = n + 1`` tokens)::

    decoder input   bos bos y_1 y_1 y_2 y_2 … y_n y_n      (2L positions: the usual input,
                                                             each token repeated)
    predictions     p_1 p_2 p_3 p_4 …           p_2L        (m = 2L)
    CTC targets     y_1 y_2 … y_n eos                       (the usual L targets)

So the pair of predictions ``(p_{2k−1}, p_{2k})`` has seen ``y_1 … y_{k−1}``; the honest
alignment gives pair ``k`` to ``y_k``. CTC also admits ``ε ε`` for pair 1 and ``y_{k−1}``
for pair ``k`` — each pair copying its own input — which is the exploit: with ``m = 2L`` a
prediction can score a target it has already seen.

Inference mirrors training: decoding proceeds one *pair* at a time. The model reads the
pairs fed so far (``bos bos``, then each fed token twice), greedily picks the two predictions
``z_{2k−1}, z_{2k}`` of the new pair, and the token fed next (twice) is the pair's last
non-blank prediction, or ε when both are blank (as an AXE model is fed its own ε). The output
is the CTC collapse of ``z_1 z_2 …`` (merge repeats, drop ε) up to the first eos.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import latalign as la
from latalign.translate.batching import TokenBatchSampler, collate
from latalign.translate.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from latalign.translate.config import ModelConfig
from latalign.translate.data import DataConfig, PreparedData
from latalign.translate.decode import max_lengths
from latalign.translate.model import Transformer
from latalign.translate.optim import InverseSqrtSchedule, build_optimizer

logger = logging.getLogger(__name__)


def double_inputs(prev_output_tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) ``bos y_1 … y_n`` (+pad) -> (B, 2T) ``bos bos y_1 y_1 … y_n y_n`` (+pad)."""
    return prev_output_tokens.repeat_interleave(2, dim=1)


def doubled_ctc_sum(
    logits: torch.Tensor, target: torch.Tensor, target_lengths: torch.Tensor, blank: int
) -> torch.Tensor:
    """Summed real CTC (nats) of ``2L`` predictions against the ``L`` targets.

    logits (B, 2T, V) unnormalised; target (B, T) padded; target_lengths (B,) = L.
    Infeasible sentences (none exist at ``m = 2L``) would contribute 0.
    """
    return la.ctc_loss(
        logits.float(),
        target,
        2 * target_lengths,
        target_lengths,
        blank=blank,
        reduction="sum",
        zero_infinity=True,
        from_logits=True,
    )


def ctc_collapse(stream: list[int], blank: int, eos: int) -> list[int]:
    """CTC's rule on a prediction stream: merge repeats, drop ε; stop at the first eos."""
    out: list[int] = []
    prev = None
    for tok in stream:
        if tok != prev and tok != blank:
            if tok == eos:
                break
            out.append(tok)
        prev = tok
    return out


@torch.no_grad()
def doubled_greedy_decode(
    model: Transformer,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    *,
    blank: int,
    pad: int = 0,
    bos: int = 1,
    eos: int = 2,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
) -> list[list[int]]:
    """Greedy decoding with the doubled layout (module docstring): B token-id lists, CTC
    collapsed, without eos. At most ``int(a · src_len + b)`` pairs per sentence."""
    was_training = model.training
    model.eval()
    try:
        enc = model.encode(src_tokens, src_lengths)
        limits = max_lengths(src_tokens, pad_id=pad, max_len_a=max_len_a, max_len_b=max_len_b)
        limit = min(int(limits.max()) + 1, (model.cfg.max_positions - 1) // 2)
        bsz = src_tokens.size(0)
        fed = torch.full((bsz, 1), bos, dtype=torch.long, device=src_tokens.device)
        streams: list[list[int]] = [[] for _ in range(bsz)]
        done = [False] * bsz
        for k in range(limit):
            logits = model.decode(double_inputs(fed), enc)[:, -2:, :]  # (B, 2, V)
            logits[..., pad] = -math.inf
            logits[..., bos] = -math.inf
            z = logits.argmax(dim=-1).tolist()  # (B, 2)
            nxt = []
            for b in range(bsz):
                if done[b]:
                    nxt.append(eos)
                    continue
                streams[b].extend(z[b])
                non_blank = [t for t in z[b] if t != blank]
                g = non_blank[-1] if non_blank else blank
                if g == eos or k + 1 >= int(limits[b]) + 1:
                    done[b] = True
                nxt.append(g)
            if all(done):
                break
            fed = torch.cat([fed, torch.tensor(nxt, device=fed.device)[:, None]], dim=1)
        return [ctc_collapse(s, blank, eos) for s in streams]
    finally:
        model.train(was_training)


def translate_doubled(
    model: Transformer, tokenizer: Any, sentences: list[str], *, batch_size: int = 64
) -> list[str]:
    """Translate raw sentences with :func:`doubled_greedy_decode`; strings in input order."""
    out = [""] * len(sentences)
    enc = [tokenizer.encode(s) + [tokenizer.eos_id] for s in sentences]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lengths = torch.tensor([len(enc[i]) for i in idx])
        src = torch.full((len(idx), int(lengths.max())), tokenizer.pad_id, dtype=torch.long)
        for r, i in enumerate(idx):
            src[r, : len(enc[i])] = torch.tensor(enc[i])
        hyps = doubled_greedy_decode(
            model, src, lengths, blank=tokenizer.blank_id, pad=tokenizer.pad_id,
            bos=tokenizer.bos_id, eos=tokenizer.eos_id,
        )  # fmt: skip
        for i, h in zip(idx, hyps):
            out[i] = tokenizer.decode(h)
    return out


@dataclass
class DoubledConfig:
    """A doubled-CTC training run (teacher forcing with every target token fed twice)."""

    run_dir: str
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    max_tokens: int = 4096
    max_updates: int = 1000
    validate_every: int = 1000
    log_every: int = 100
    clip_norm: float = 0.0
    seed: int = 1

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class DoubledResult:
    """What :func:`train_doubled` returns; losses in nats per target token."""

    model: Transformer
    history: list[dict[str, Any]]
    step: int
    final: dict[str, Any]
    updates_per_epoch: int


@torch.no_grad()
def _validate(model: Transformer, batches: list[Any], blank: int) -> float:
    model.eval()
    total = ntok = 0.0
    for b in batches:
        logits = model(b.src_tokens, b.src_lengths, double_inputs(b.prev_output_tokens))
        total += float(doubled_ctc_sum(logits, b.target, b.target_lengths, blank))
        ntok += float(b.target_lengths.sum())
    model.train()
    return total / max(ntok, 1.0)


def train_doubled(cfg: DoubledConfig, data: PreparedData) -> DoubledResult:
    """Train (or resume, from ``run_dir/checkpoints/checkpoint_last.pt``) with doubled CTC.

    Composes the stack's model, optimizer, schedule, sampler and collate; checkpoints every
    ``validate_every`` updates and at the end. Refuses (``ValueError``) a run directory whose
    ``config.json`` differs from ``cfg``.
    """
    run_dir = Path(cfg.run_dir)
    last, _ = checkpoint_paths(run_dir)
    cfg_file = run_dir / "config.json"
    if cfg_file.is_file() and json.loads(cfg_file.read_text()) != cfg.to_dict():
        raise ValueError(
            f"expected the config of the run in {run_dir}; found a different one "
            "(use --force or another --out)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    tok = data.tokenizer
    model = Transformer(ModelConfig.preset(cfg.preset, tok.vocab_size, **cfg.model))
    optimizer = build_optimizer(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = InverseSqrtSchedule(optimizer, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr)
    sampler = TokenBatchSampler(
        data.train.src_sizes, data.train.tgt_sizes, max_tokens=cfg.max_tokens, seed=cfg.seed
    )
    updates_per_epoch = len(sampler)
    valid_sampler = TokenBatchSampler(
        data.valid.src_sizes, data.valid.tgt_sizes, max_tokens=cfg.max_tokens,
        shuffle=False, even=False,
    )  # fmt: skip
    valid_batches = [collate([data.valid[i] for i in ix]) for ix in valid_sampler]
    step, history = 0, []
    if last.is_file():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        history = json.loads(state["history"])
        set_rng_state(state["rng"])
        logger.info("doubled CTC: resuming %s at update %d", run_dir, step)

    def checkpoint() -> None:
        save_checkpoint(
            {
                "model": model.state_dict(),
                "model_config": model.cfg.to_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(),
                "step": step,
                "history": json.dumps(history),
                "rng": rng_state(),
            },
            last,
        )

    model.train()
    acc_loss = acc_tok = 0.0
    t0 = time.monotonic()
    while step < cfg.max_updates:
        for indices in sampler:
            batch = collate([data.train[i] for i in indices])
            logits = model(
                batch.src_tokens, batch.src_lengths, double_inputs(batch.prev_output_tokens)
            )
            loss = doubled_ctc_sum(logits, batch.target, batch.target_lengths, tok.blank_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ntok = float(batch.target_lengths.sum())
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.div_(ntok)
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            acc_loss += float(loss.detach())
            acc_tok += ntok
            if step % cfg.log_every == 0:
                history.append(
                    {"kind": "train", "step": step, "epoch": int(sampler.epoch),
                     "train_loss": acc_loss / max(acc_tok, 1.0),
                     "elapsed": round(time.monotonic() - t0, 3)}
                )  # fmt: skip
                acc_loss = acc_tok = 0.0
            if step % cfg.validate_every == 0 or step >= cfg.max_updates:
                history.append(
                    {"kind": "valid", "step": step, "epoch": int(sampler.epoch),
                     "valid_loss": _validate(model, valid_batches, tok.blank_id)}
                )  # fmt: skip
                checkpoint()
            if step >= cfg.max_updates:
                break
    if not history or history[-1].get("kind") != "valid" or history[-1]["step"] != step:
        history.append(
            {"kind": "valid", "step": step, "epoch": int(sampler.epoch),
             "valid_loss": _validate(model, valid_batches, tok.blank_id)}
        )  # fmt: skip
        checkpoint()
    model.eval()
    return DoubledResult(model, history, step, history[-1], updates_per_epoch)
