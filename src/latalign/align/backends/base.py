"""The one interface every backend implements (:class:`Backend`) and what passes through it.

Layout shared by all backends: gathered emissions ``em (N, T, S+1)`` float64, column 0 the
blank and column ``i`` the target ``y_i``; lengths ``in_len``/``tg_len (N,)`` int64,
contiguous, on ``em``'s device; grids ``(N, S+1, T+1)`` of cells ``(i, j)``. Gradients are
w.r.t. ``em``, already multiplied by the per-sequence upstream gradient ``gscale (N,)``, and
NaN for a whole sequence that has no path while its ``gscale`` is not 0 (as torch's CTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..objective import Objective

# rows per chunk when a half-precision input is upcast for log_softmax (bounds the copy)
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class AlgebraState:
    """What an operator-algebra forward pass keeps for its backward pass and best paths.

    ``saved`` travels through autograd's ``save_for_backward`` (freed once the backward has
    run); ``extra`` holds whatever else the backend needs (not tensors of the graph's size).
    """

    objective: Objective
    loss: torch.Tensor  # (N,) float64 on em's device: -logZ or -max, +inf where no path
    saved: tuple[torch.Tensor | None, ...] = ()
    extra: Any = None
    backend: str = ""  # the name it came from (set by :mod:`latalign.align.dispatch`)


@dataclass
class CTCState:
    """What a real-CTC forward pass keeps for its backward pass."""

    loss: torch.Tensor  # (N,) float64 on em's device
    saved: tuple[torch.Tensor | None, ...] = ()
    backend: str = ""


class Backend(Protocol):
    """The dynamic programs and the emissions, as every backend provides them.

    ``targets`` passed to the CTC methods always have at least one column (the empty-target
    case is padded once, in :mod:`latalign.align.dispatch`).
    """

    name: str

    def emissions(
        self,
        src: torch.Tensor,
        idx: torch.Tensor,
        in_len: torch.Tensor,
        from_logits: bool,
        *,
        keep: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], list[torch.Tensor]]:
        """``em[b, t, k] = log p_t(idx[b, k])`` float64 ``(N, T, K)`` from log-probabilities
        or logits ``src (N, T, C)`` of any strides, the tensors its backward needs
        (``saved``), and ``scratch``: buffers the forward computed that the backward may take
        and overwrite, once (``keep``: a backward will run)."""
        ...

    def emissions_backward(
        self,
        src: torch.Tensor,
        idx: torch.Tensor,
        in_len: torch.Tensor,
        from_logits: bool,
        saved: tuple[torch.Tensor, ...],
        scratch: list[torch.Tensor],
        grad_em: torch.Tensor,
    ) -> torch.Tensor:
        """The gradient w.r.t. ``src`` (shape of ``src``); rows ``t ≥ m`` exactly 0 from logits.
        ``scratch``: the forward's list; a buffer taken from it (``pop``) is not there for a
        second backward through the same graph (``retain_graph``), which recomputes it."""
        ...

    def algebra_forward(
        self,
        em: torch.Tensor,
        in_len: torch.Tensor,
        tg_len: torch.Tensor,
        objective: Objective,
        *,
        keep: bool,
        paths: bool = False,
    ) -> AlgebraState:
        """Losses of ``objective``; ``keep``: for a backward pass; ``paths``: for best paths."""
        ...

    def algebra_backward(
        self,
        state: AlgebraState,
        em: torch.Tensor,
        in_len: torch.Tensor,
        tg_len: torch.Tensor,
        gscale: torch.Tensor,
    ) -> torch.Tensor:
        """``gscale``-weighted gradient of the losses w.r.t. ``em``: ``(N, T, S+1)``."""
        ...

    def best_paths(
        self, state: AlgebraState, in_len: torch.Tensor, tg_len: torch.Tensor
    ) -> list[list[int] | None]:
        """Move codes of each best path from ``(0, 0)`` to ``(n, m)``; ``None``: no path.
        ``state`` comes from ``algebra_forward(..., paths=True)`` of a max objective."""
        ...

    def ctc_forward(
        self,
        em: torch.Tensor,
        targets: torch.Tensor,
        in_len: torch.Tensor,
        tg_len: torch.Tensor,
        *,
        keep: bool,
    ) -> CTCState:
        """Real CTC's ``−log p(y|x)`` per sequence."""
        ...

    def ctc_backward(
        self,
        state: CTCState,
        em: torch.Tensor,
        targets: torch.Tensor,
        in_len: torch.Tensor,
        tg_len: torch.Tensor,
        gscale: torch.Tensor,
    ) -> torch.Tensor:
        """``gscale``-weighted gradient of real CTC w.r.t. ``em``: ``(N, T, S+1)``."""
        ...


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant table (move weights, offsets) on ``device``, copied there once per
    (values, dtype, device) and cached: no host→device copy per call. Never write to it."""
    key = (values, dtype, torch.device(device))
    table = _CONSTANTS.get(key)
    if table is None:
        table = _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return table


def nan_where_infeasible(
    grad: torch.Tensor, loss: torch.Tensor, gscale: torch.Tensor
) -> torch.Tensor:
    """NaN over the whole gradient of each sequence with no path (``loss = inf``) whose
    upstream gradient is not 0, in place and without a host synchronisation."""
    bad = torch.isinf(loss) & (gscale != 0)
    return grad.masked_fill_(bad.view(-1, *([1] * (grad.dim() - 1))), float("nan"))


def _row_chunks(x: torch.Tensor):
    rows = x.shape[0] * x.shape[1]
    per = max(1, _CHUNK_ELEMENTS // max(1, x.shape[2]))
    flat = x.reshape(rows, x.shape[2])
    for start in range(0, rows, per):
        yield start, flat[start : start + per]


def torch_emissions(
    src: torch.Tensor, idx: torch.Tensor, from_logits: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """:meth:`Backend.emissions` in PyTorch ops (any strides): from logits, the log-softmax
    runs chunk by chunk of rows (a bounded temporary, never a second ``(N, T, V)`` tensor)
    and only the gathered columns are kept."""
    nb, tmax, _ = src.shape
    k = idx.shape[1]
    full_idx = idx.view(nb, 1, k).expand(nb, tmax, k)
    if not from_logits:
        return src.gather(2, full_idx).to(torch.float64), ()
    em = torch.empty((nb * tmax, k), dtype=torch.float64, device=src.device)
    flat_idx = full_idx.reshape(nb * tmax, k)
    for start, chunk in _row_chunks(src):
        stop = start + chunk.shape[0]
        work = chunk if chunk.dtype in (torch.float32, torch.float64) else chunk.float()
        lp = torch.log_softmax(work, dim=1)
        em[start:stop] = lp.gather(1, flat_idx[start:stop])
    return em.view(nb, tmax, k), ()


def torch_emissions_backward(
    src: torch.Tensor,
    idx: torch.Tensor,
    in_len: torch.Tensor,
    from_logits: bool,
    grad_em: torch.Tensor,
    *,
    sparse_rows: bool,
) -> torch.Tensor:
    """:meth:`Backend.emissions_backward` in PyTorch ops: a scatter for log-probabilities,
    ``scatter(g) − softmax · Σg`` for logits (one dense pass into the gradient's own buffer).

    ``sparse_rows``: zero the padding rows through their indices (touches only those rows,
    but finding them synchronises on a GPU: CPU backends only) rather than with a mask
    over the whole gradient (no synchronisation, one more dense pass).
    """
    nb, tmax, _ = src.shape
    k = idx.shape[1]
    full_idx = idx.view(nb, 1, k).expand(nb, tmax, k)
    g = grad_em.to(torch.float32 if src.dtype != torch.float64 else torch.float64)
    if not from_logits:
        grad = torch.zeros(src.shape, dtype=src.dtype, device=src.device)
        grad.scatter_add_(2, full_idx, g.to(src.dtype))
        return grad
    gsum = g.sum(dim=2, keepdim=True)  # (N, T, 1)
    if src.dtype in (torch.float32, torch.float64):
        grad = torch.softmax(src, dim=2)  # one fused pass; the buffer becomes the gradient
        grad.mul_(-gsum)
    else:
        grad = torch.empty(src.shape, dtype=src.dtype, device=src.device)
        gflat = grad.view(-1, src.shape[2])
        sflat = gsum.reshape(-1, 1)
        for start, chunk in _row_chunks(src):
            stop = start + chunk.shape[0]
            gflat[start:stop] = torch.softmax(chunk.float(), dim=1).mul_(-sflat[start:stop])
    grad.scatter_add_(2, full_idx, g.to(grad.dtype))
    _zero_padding_rows(grad, in_len, sparse_rows)
    return grad


def softmax_emissions(src: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From float32/float64 logits: ``(em, p)`` with ``p = softmax(src)`` over the classes,
    which the backward turns into the gradient in place (one dense ``exp`` pass for forward
    and backward together, against two when the backward recomputes it), and
    ``em = src[idx] − lse`` in float64.

    The normaliser comes from ``p`` itself, at the gathered column ``k`` of the row with the
    largest ``p``: ``lse = src[k] − log p[k]``, exact to ``p``'s rounding where ``p[k]`` is a
    normal float (no pass over the classes beyond the softmax). A row whose gathered columns
    all sit below that (the targets ~87 nats under the row's mass in float32) gets its
    ``logsumexp`` over the classes instead, so such a target keeps its finite log-probability.
    """
    nb, tmax, _ = src.shape
    k = idx.shape[1]
    full_idx = idx.view(nb, 1, k).expand(nb, tmax, k)
    p = torch.softmax(src, dim=2)
    xg = src.gather(2, full_idx).to(torch.float64)
    best, col = p.gather(2, full_idx).to(torch.float64).max(dim=2, keepdim=True)
    lse = xg.gather(2, col) - best.log()  # (N, T, 1)
    weak = (best < torch.finfo(p.dtype).tiny).view(nb, tmax).nonzero()  # CPU: no sync cost
    if weak.numel():
        b, t = weak[:, 0], weak[:, 1]
        lse[b, t, 0] = torch.logsumexp(src[b, t].to(torch.float64), dim=1)
    return xg - lse, p


def softmax_emissions_backward(
    p: torch.Tensor, idx: torch.Tensor, in_len: torch.Tensor, grad_em: torch.Tensor
) -> torch.Tensor:
    """The logits' gradient ``scatter(g) − p · Σg`` written over ``p`` (from
    :func:`softmax_emissions`), padding rows zeroed through their indices (CPU)."""
    nb, tmax, _ = p.shape
    k = idx.shape[1]
    g = grad_em.to(p.dtype)
    grad = p.mul_(-g.sum(dim=2, keepdim=True))
    grad.scatter_add_(2, idx.view(nb, 1, k).expand(nb, tmax, k), g)
    _zero_padding_rows(grad, in_len, True)
    return grad


class TorchEmissions:
    """:meth:`Backend.emissions` and :meth:`Backend.emissions_backward` by the functions
    above, for a backend whose class sets ``sparse_rows`` (see
    :func:`torch_emissions_backward`) and ``keep_softmax``: from float32/float64 logits with
    a backward to come, keep the forward's softmax for it (:func:`softmax_emissions`: one
    ``(N, T, C)`` buffer more between forward and backward, one dense ``exp`` pass less).
    The CPU backend keeps it (time is what a CPU lacks); the GPU ones recompute it."""

    sparse_rows: bool
    keep_softmax: bool = False

    def emissions(self, src, idx, in_len, from_logits, *, keep=False):
        if (
            keep
            and from_logits
            and self.keep_softmax
            and src.dtype in (torch.float32, torch.float64)
        ):
            em, p = softmax_emissions(src, idx)
            return em, (), [p]
        return (*torch_emissions(src, idx, from_logits), [])

    def emissions_backward(self, src, idx, in_len, from_logits, saved, scratch, grad_em):
        if scratch:
            return softmax_emissions_backward(scratch.pop(), idx, in_len, grad_em)
        return torch_emissions_backward(
            src, idx, in_len, from_logits, grad_em, sparse_rows=self.sparse_rows
        )


def _zero_padding_rows(grad: torch.Tensor, in_len: torch.Tensor, sparse: bool) -> None:
    """Zero the rows ``t ≥ m`` of ``grad (N, T, V)`` in place.

    Their true gradient is 0 (the dynamic programs never read them); ``softmax · 0`` would
    be NaN where the padding holds NaN or ±inf.
    """
    nb, tmax, ncls = grad.shape
    pad = torch.arange(tmax, device=grad.device).view(1, tmax) >= in_len.view(nb, 1)
    if not sparse or not grad.is_contiguous():
        grad.masked_fill_(pad.unsqueeze(2), 0.0)
        return
    rows = pad.view(-1).nonzero().view(-1)
    if rows.numel():
        grad.view(nb * tmax, ncls).index_fill_(0, rows, 0.0)
