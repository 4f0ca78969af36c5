"""Adam with decoupled weight decay and fairseq's inverse square root schedule."""

from __future__ import annotations

import math
from typing import Any

import torch


def inverse_sqrt_lr(step: int, lr: float, warmup_updates: int, warmup_init_lr: float) -> float:
    """Learning rate after ``step`` updates (fairseq ``inverse_sqrt``).

    Linear warm-up from ``warmup_init_lr`` to ``lr`` over ``warmup_updates``, then
    ``lr * sqrt(warmup_updates / step)``.
    """
    if step < warmup_updates:
        return warmup_init_lr + step * (lr - warmup_init_lr) / warmup_updates
    return lr * math.sqrt(max(warmup_updates, 1) / max(step, 1))


class InverseSqrtSchedule:
    """Sets the optimizer's lr for the current update count; ``state_dict`` round-trips."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr: float,
        warmup_updates: int,
        warmup_init_lr: float,
    ) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.warmup_updates = warmup_updates
        self.warmup_init_lr = warmup_init_lr
        self.num_updates = 0
        self.step_update(0)

    def step_update(self, num_updates: int) -> float:
        """Set and return the lr used for the update after ``num_updates`` updates."""
        self.num_updates = num_updates
        value = inverse_sqrt_lr(num_updates, self.lr, self.warmup_updates, self.warmup_init_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = value
        return value

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_update(int(state["num_updates"]))


def build_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over trainable parameters (fairseq's Adam applies decoupled weight decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
