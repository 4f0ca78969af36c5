"""Device-agnostic vectorized PyTorch backend (CPU or CUDA), no per-cell Python.

The operator algebra runs over anti-diagonals ``d = i + j`` of the grid: every cell of a
diagonal depends only on the two diagonals before it, so one step updates a whole
diagonal for the whole batch (``n + m`` steps). The backward pass runs the mirror
recursion (``beta``) over the diagonals in reverse and turns ``alpha + score + beta``
into move posteriors in one vectorized expression. Real CTC steps over time, vectorized
over the batch and the extended label states.

Same layout as :mod:`.numba_cpu`: emissions ``em (N, T, S+1)``, column 0 = blank.
The dynamic program runs in float64 so that every backend agrees to 1e-5.
"""

from __future__ import annotations

import torch

from .. import objective as spec
from ..objective import (
    FRAME_J,
    MOVE_CLONE_TARGET,
    MOVE_DELIMITER,
    MOVE_NONE,
    MOVES,
    TARGET,
    Move,
    Objective,
)
from .base import (
    AlgebraState,
    CTCState,
    TorchEmissions,
    constant,
    nan_where_infeasible,
)

NEG_INF = float("-inf")
DP_DTYPE = torch.float64


def _scaled(w: float, e: torch.Tensor) -> torch.Tensor:
    # w · log p with the convention 0 · (−inf) = 0
    if w == 0.0:
        return torch.zeros_like(e)
    return w * e


class AlgebraScores:
    """Destination-indexed move scores on the grid, each ``(N, S+1, T+1)``, −inf = not allowed.

    Built from the spec table :data:`~latalign.align.objective.MOVES`: a move into
    ``(i, j)`` is allowed where the table allows it (source cell on the grid, ``i ≥ 1`` for a
    target, ``j ≥ 1`` for ``p_j``, ``j ≤ i`` where causal applies) and only inside the
    sequence's own grid ``i ≤ n, j ≤ m``. Outside it the score is the constant ``-inf``:
    frames beyond ``input_lengths`` (and targets beyond ``target_lengths``) are never read
    into the dynamic program, whatever they hold (NaN, ±inf).

    ``right`` merges the two moves from ``(i, j-1)`` (``clone_target`` ⊕ ``delimiter``) so
    that a diagonal step has three candidates; the max backend recovers which move won
    afterwards, in one vectorized pass (:func:`move_codes`).
    """

    def __init__(
        self,
        em: torch.Tensor,
        in_len: torch.Tensor,
        tg_len: torch.Tensor,
        weights,
        flags,
        causal: bool,
        use_max: bool,
    ) -> None:
        nb, tmax, s1 = em.shape
        dev = em.device
        em = em.to(DP_DTYPE)
        self.shape = (nb, s1, tmax + 1)
        i_idx = torch.arange(s1, device=dev).view(1, s1, 1)
        j_idx = torch.arange(tmax + 1, device=dev).view(1, 1, tmax + 1)
        inside = (i_idx <= tg_len.view(nb, 1, 1)) & (j_idx <= in_len.view(nb, 1, 1))
        full = torch.full(self.shape, NEG_INF, dtype=DP_DTYPE, device=dev)
        # column j uses p_j; column 0 -> p_1 (only moves reading p_max(j,1) get there)
        tgt = em.transpose(1, 2)  # (N, S+1, T)
        tgt_j = torch.cat([tgt[:, :, :1], tgt], dim=2)  # (N, S+1, T+1)
        blank = em[:, :, 0]
        blank_j = torch.cat([blank[:, :1], blank], dim=1).unsqueeze(1)  # (N, 1, T+1)
        for move, w, on in zip(MOVES, weights, flags):
            if not on:
                setattr(self, move.operator, full)
                continue
            ok = inside & (i_idx >= move.di) & (j_idx >= move.dj)
            if move.emits == TARGET:
                ok = ok & (i_idx >= 1)
            if move.frame == FRAME_J:
                ok = ok & (j_idx >= 1)
            if causal and move.causal:
                ok = ok & (j_idx <= i_idx)
            emission = tgt_j if move.emits == TARGET else blank_j
            setattr(self, move.operator, torch.where(ok, _scaled(w, emission), full))
        fct, fd = flags[MOVE_CLONE_TARGET - 1], flags[MOVE_DELIMITER - 1]
        if not fct:
            self.right = self.delimiter
        elif not fd:
            self.right = self.clone_target
        elif use_max:
            self.right = torch.maximum(self.clone_target, self.delimiter)
        else:
            self.right = torch.logaddexp(self.clone_target, self.delimiter)

    def of(self, move: Move) -> torch.Tensor:
        """The scores of one move of the spec table."""
        return getattr(self, move.operator)


def _skew(grid: torch.Tensor, n_diag: int) -> torch.Tensor:
    """(..., S+1, T+1) grid -> (D, ..., S+1) with ``out[d, ..., i] = grid[..., i, d - i]``.

    Row ``i`` is shifted right by ``i`` with a strided view over a padded copy: reads that
    fall before a row's start land in the previous row's padding (the fill value).
    """
    *lead, s1, t1 = grid.shape
    width = t1 + s1
    fill = NEG_INF if grid.is_floating_point() else 0
    padded = grid.new_full((*lead, s1, width), fill)
    padded[..., :t1] = grid
    strides = padded.stride()
    shifted = padded.as_strided((*lead, s1, n_diag), (*strides[:-2], width - 1, 1))
    return shifted.movedim(-1, 0).contiguous()


def _unskew(sk: torch.Tensor, t1: int) -> torch.Tensor:
    """(D, N, S+1) -> (N, S+1, T+1) with ``grid[b, i, j] = sk[i + j, b, i]``."""
    n_diag, nb, s1 = sk.shape
    rows = sk.permute(1, 2, 0).contiguous()  # (N, S+1, D)
    return rows.as_strided((nb, s1, t1), (rows.stride(0), n_diag + 1, 1)).contiguous()


def algebra_forward(scores: AlgebraScores, use_max: bool):
    """Alpha on the grid ``(N, S+1, T+1)``; for max also move codes (int8, 0 = none)."""
    nb, s1, t1 = scores.shape
    n_diag = s1 + t1 - 1
    dev = scores.align.device
    s_align = _skew(scores.align, n_diag)  # (D, N, S+1)
    s_down = _skew(scores.clone_prediction, n_diag)
    s_right = _skew(scores.right, n_diag)
    alpha = torch.full((n_diag, nb, s1), NEG_INF, dtype=DP_DTYPE, device=dev)
    alpha[0, :, 0].fill_(0.0)
    cand = torch.full((3, nb, s1), NEG_INF, dtype=DP_DTYPE, device=dev)
    for d in range(1, n_diag):
        if d >= 2:
            torch.add(alpha[d - 2, :, :-1], s_align[d, :, 1:], out=cand[0, :, 1:])
        torch.add(alpha[d - 1, :, :-1], s_down[d, :, 1:], out=cand[1, :, 1:])
        torch.add(alpha[d - 1], s_right[d], out=cand[2])
        if use_max:
            torch.maximum(cand[0], cand[1], out=alpha[d])
            torch.maximum(alpha[d], cand[2], out=alpha[d])
        else:
            torch.logsumexp(cand, 0, out=alpha[d])
    grid = _unskew(alpha, t1)
    return grid, (move_codes(scores, grid) if use_max else None)


def move_codes(scores: AlgebraScores, alpha: torch.Tensor) -> torch.Tensor:
    """The winning move code into every cell (``MOVE_NONE`` where unreachable).

    Moves are tried in canonical order with a strict ``>``: an earlier move keeps a tie.
    """
    nb, s1, t1 = scores.shape
    # the same float64 sums as the forward pass, so the winner is recovered exactly
    best = torch.full(scores.shape, NEG_INF, dtype=DP_DTYPE, device=alpha.device)
    codes = torch.full(scores.shape, MOVE_NONE, dtype=torch.int8, device=alpha.device)
    for move in MOVES:
        di, dj = move.di, move.dj
        value = alpha[:, : s1 - di, : t1 - dj] + scores.of(move)[:, di:, dj:]
        region = best[:, di:, dj:]
        wins = value > region  # strict: an earlier move keeps a tie
        region.copy_(torch.where(wins, value, region))
        codes[:, di:, dj:].masked_fill_(wins, move.code)
    return codes


def algebra_backward_sum(scores: AlgebraScores, alpha: torch.Tensor, in_len, tg_len, weights):
    """Gradient of ``-logZ`` per sequence w.r.t. the emissions: ``(N, T, S+1)`` float64.

    Rows of infeasible sequences are zero.
    """
    nb, s1, t1 = scores.shape
    n_diag = s1 + t1 - 1
    dev = alpha.device
    s_align = _skew(scores.align, n_diag)  # (D, N, S+1)
    s_down = _skew(scores.clone_prediction, n_diag)
    s_right = _skew(scores.right, n_diag)
    end_d = (tg_len + in_len).view(1, nb)
    end_mask = (torch.arange(n_diag, device=dev).view(n_diag, 1) == end_d).view(n_diag, nb, 1) & (
        torch.arange(s1, device=dev).view(1, 1, s1) == tg_len.view(1, nb, 1)
    )
    beta = torch.full((n_diag, nb, s1), NEG_INF, dtype=DP_DTYPE, device=dev)
    cand = torch.full((3, nb, s1), NEG_INF, dtype=DP_DTYPE, device=dev)
    zero = torch.zeros((), dtype=DP_DTYPE, device=dev)
    for d in range(n_diag - 1, -1, -1):
        if d + 2 < n_diag:  # align into (i+1, j+1)
            torch.add(beta[d + 2, :, 1:], s_align[d + 2, :, 1:], out=cand[0, :, :-1])
        if d + 1 < n_diag:
            torch.add(beta[d + 1, :, 1:], s_down[d + 1, :, 1:], out=cand[1, :, :-1])  # (i+1, j)
            torch.add(beta[d + 1], s_right[d + 1], out=cand[2])  # (i, j+1)
        beta[d] = torch.where(end_mask[d], zero, torch.logsumexp(cand, dim=0))
    beta = _unskew(beta, t1)  # (N, S+1, T+1)
    bidx = torch.arange(nb, device=dev)
    logz = alpha[bidx, tg_len, in_len]  # (N,)
    feasible = logz > NEG_INF
    z = torch.where(feasible, logz, zero).view(nb, 1, 1)
    # posterior of each move into (i, j): alpha at its source + its score + beta at (i, j)
    post = torch.zeros((len(MOVES), nb, s1, t1), dtype=DP_DTYPE, device=dev)
    for k, move in enumerate(MOVES):
        di, dj = move.di, move.dj
        post[k, :, di:, dj:] = torch.exp(
            alpha[:, : s1 - di, : t1 - dj] + scores.of(move)[:, di:, dj:] + beta[:, di:, dj:] - z
        )
    # every term is -inf or finite (cells outside a sequence's grid score the constant
    # -inf), so no NaN arises; infeasible sequences have beta = -inf except at (n, m)
    post = post * feasible.view(1, nb, 1, 1)
    grad = torch.zeros((nb, t1 - 1, s1), dtype=DP_DTYPE, device=dev)
    g_tgt = torch.zeros((nb, s1, t1), dtype=DP_DTYPE, device=dev)  # column j -> p_j
    for k, (move, w) in enumerate(zip(MOVES, weights)):
        if w == 0.0:
            continue
        if move.emits == TARGET:
            g_tgt += w * post[k]
        else:
            grad[:, :, 0] -= w * post[k, :, :, 1:].sum(dim=1)
    g_tgt[:, :, 1] += g_tgt[:, :, 0]  # a move into column 0 reads p_max(0,1) = p_1
    grad[:, :, 1:] -= g_tgt[:, 1:, 1:].transpose(1, 2)
    return grad, logz


def backtrack(codes: torch.Tensor, in_len: torch.Tensor, tg_len: torch.Tensor):
    """Best paths from move codes ``(N, S+1, T+1)``.

    Returns ``(steps, si, sj, length)``: ``steps (N, L)`` move codes from the end backwards
    (0 after the path ends), the destination cells ``si, sj`` of each step, and the path
    length (−1 where the end cell is unreachable).
    """
    nb, s1, t1 = codes.shape
    dev = codes.device
    flat = codes.reshape(nb, s1 * t1).long()
    i = tg_len.clone().long()
    j = in_len.clone().long()
    max_len = s1 + t1 - 2
    steps = torch.zeros((nb, max(max_len, 1)), dtype=torch.long, device=dev)
    si = torch.zeros_like(steps)
    sj = torch.zeros_like(steps)
    di = constant(spec.MOVE_DI, torch.long, dev)
    dj = constant(spec.MOVE_DJ, torch.long, dev)
    for k in range(max_len):
        c = flat.gather(1, (i * t1 + j).view(nb, 1)).view(nb)
        c = torch.where((i == 0) & (j == 0), MOVE_NONE, c)
        steps[:, k] = c
        si[:, k] = i
        sj[:, k] = j
        i = i - di[c]
        j = j - dj[c]
    length = (steps != MOVE_NONE).sum(dim=1)
    end_code = flat.gather(1, (tg_len.long() * t1 + in_len.long()).view(nb, 1)).view(nb)
    unreachable = (end_code == MOVE_NONE) & ((tg_len > 0) | (in_len > 0))
    length = torch.where(unreachable, -1, length)
    return steps, si, sj, length


def algebra_backward_max(codes, in_len, tg_len, weights, t_max: int):
    """Gradient of ``-max`` w.r.t. the emissions ``(N, T, S+1)``: minus weighted move counts."""
    return path_gradient(*backtrack(codes, in_len, tg_len), weights, t_max, codes.shape[1])


def path_gradient(
    steps: torch.Tensor,
    si: torch.Tensor,
    sj: torch.Tensor,
    length: torch.Tensor,
    weights,
    t_max: int,
    s1: int,
) -> torch.Tensor:
    """Minus the weighted move counts of best paths (as :func:`backtrack` returns them),
    scattered onto the emissions each move scored: ``(N, T, S+1)`` float64."""
    nb = steps.shape[0]
    dev = steps.device
    w = constant((0.0, *weights), DP_DTYPE, dev)  # by move code
    emits_target = constant(spec.MOVE_EMITS_TARGET, torch.bool, dev)
    at_least_1 = constant(spec.MOVE_FRAME_AT_LEAST_1, torch.bool, dev)
    valid = steps != MOVE_NONE
    wstep = w[steps] * (length >= 0).view(nb, 1) * valid
    row = torch.where(at_least_1[steps], sj.clamp(min=1), sj) - 1  # prediction used (0-based)
    col = torch.where(emits_target[steps], si, 0)  # y_i, or the blank (column 0)
    row = torch.where(valid, row, 0)
    col = torch.where(valid, col, 0)
    grad = torch.zeros((nb, t_max * s1), dtype=DP_DTYPE, device=dev)
    grad.scatter_add_(1, row * s1 + col, -wstep)
    return grad.view(nb, t_max, s1)


# --------------------------------------------------------------------------------------
# Real CTC over time, vectorized over (batch, extended states).
# --------------------------------------------------------------------------------------


def _ctc_setup(em: torch.Tensor, targets: torch.Tensor, in_len: torch.Tensor, tg_len: torch.Tensor):
    nb, tmax, s1 = em.shape
    dev = em.device
    ns = 2 * (s1 - 1) + 1
    s = torch.arange(ns, device=dev)
    emit = torch.where(s % 2 == 0, 0, (s + 1) // 2)  # (ns,)
    # frames t >= m score the constant -inf: padding never enters, whatever it holds
    frame_ok = torch.arange(tmax, device=dev).view(1, tmax, 1) < in_len.view(nb, 1, 1)
    ext = torch.where(frame_ok, em.to(DP_DTYPE)[:, :, emit], NEG_INF)  # (N, T, ns)
    k = (s + 1) // 2  # 1-based target position of label states
    prev_lab = targets.gather(1, (k - 2).clamp(min=0).view(1, ns).expand(nb, ns))
    this_lab = targets.gather(1, (k - 1).clamp(min=0).view(1, ns).expand(nb, ns))
    can_skip = (s % 2 == 1).view(1, ns) & (s >= 2).view(1, ns) & (this_lab != prev_lab)
    valid = s.view(1, ns) <= 2 * tg_len.view(nb, 1)
    return ext, can_skip, valid, emit


def ctc_forward(em, targets, in_len, tg_len):
    """Returns ``alpha (T, N, ns)`` and ``logZ (N,)``."""
    nb, tmax, _ = em.shape
    dev = em.device
    ext, can_skip, valid, _ = _ctc_setup(em, targets, in_len, tg_len)
    ns = ext.shape[2]
    alpha = torch.full((tmax, nb, ns), NEG_INF, dtype=DP_DTYPE, device=dev)
    init = torch.full((nb, ns), NEG_INF, dtype=DP_DTYPE, device=dev)
    init[:, :2] = ext[:, 0, :2]
    alpha[0] = torch.where(valid, init, NEG_INF)
    cand = torch.full((3, nb, ns), NEG_INF, dtype=DP_DTYPE, device=dev)
    for t in range(1, tmax):
        prev = alpha[t - 1]
        cand[0] = prev
        cand[1, :, 1:] = prev[:, :-1]
        cand[2, :, 2:] = torch.where(can_skip[:, 2:], prev[:, :-2], NEG_INF)
        alpha[t] = torch.where(valid, torch.logsumexp(cand, 0) + ext[:, t], NEG_INF)
    bidx = torch.arange(nb, device=dev)
    last = alpha[in_len.long() - 1, bidx]  # (N, ns)
    end = 2 * tg_len.long()
    z = last.gather(1, end.view(nb, 1)).view(nb)
    z_prev = last.gather(1, (end - 1).clamp(min=0).view(nb, 1)).view(nb)
    z = torch.where(tg_len > 0, torch.logaddexp(z, z_prev), z)
    return alpha, z


def ctc_backward(em, targets, in_len, tg_len, alpha, logz):
    """Gradient of ``-log p(y|x)`` w.r.t. ``em`` ``(N, T, S+1)``; zero where infeasible."""
    nb, tmax, s1 = em.shape
    dev = em.device
    ext, can_skip, valid, emit = _ctc_setup(em, targets, in_len, tg_len)
    ns = ext.shape[2]
    s = torch.arange(ns, device=dev).view(1, ns)
    end = 2 * tg_len.long().view(nb, 1)
    final = valid & ((s == end) | ((s == end - 1) & (end > 0)))
    beta = torch.full((tmax, nb, ns), NEG_INF, dtype=DP_DTYPE, device=dev)
    cand = torch.full((3, nb, ns), NEG_INF, dtype=DP_DTYPE, device=dev)
    m = in_len.long().view(nb, 1)
    nxt = torch.full((nb, ns), NEG_INF, dtype=DP_DTYPE, device=dev)
    for t in range(tmax - 1, -1, -1):
        if t + 1 < tmax:
            nxt = beta[t + 1] + ext[:, t + 1]
        cand[0] = nxt
        cand[1, :, :-1] = nxt[:, 1:]
        cand[2, :, :-2] = torch.where(can_skip[:, 2:], nxt[:, 2:], NEG_INF)
        rec = torch.logsumexp(cand, 0)
        here = torch.where(t == m - 1, torch.where(final, 0.0, NEG_INF), rec)
        beta[t] = torch.where(valid & (t < m), here, NEG_INF)
    feasible = logz > NEG_INF
    z = torch.where(feasible, logz, torch.zeros_like(logz)).view(1, nb, 1)
    # alpha and beta are -inf or finite everywhere (padding frames score -inf): no NaN
    gamma = torch.exp(alpha + beta - z) * feasible.view(1, nb, 1)  # (T, N, ns)
    grad = torch.zeros((nb, tmax, s1), dtype=DP_DTYPE, device=dev)
    grad.scatter_add_(2, emit.view(1, 1, ns).expand(nb, tmax, ns), -gamma.permute(1, 0, 2))
    return grad


# --------------------------------------------------------------------------------------
# The backend interface (:class:`~latalign.align.backends.base.Backend`).
# --------------------------------------------------------------------------------------


class TorchBackend(TorchEmissions):
    """Vectorized PyTorch on any device; no host synchronisation in a loss call."""

    name = "torch"
    sparse_rows = False  # any device: a mask, no synchronisation

    def algebra_forward(
        self, em, in_len, tg_len, objective: Objective, *, keep: bool, paths: bool = False
    ) -> AlgebraState:
        use_max = objective.aggregate == "max"
        nb = em.shape[0]
        scores = AlgebraScores(
            em, in_len, tg_len, objective.weights, objective.flags, objective.causal, use_max
        )
        alpha, codes = algebra_forward(scores, use_max)
        loss = -alpha[torch.arange(nb, device=em.device), tg_len, in_len]
        saved = (alpha if keep else None, codes)
        return AlgebraState(objective, loss, saved, scores if keep else None)

    def algebra_backward(self, state, em, in_len, tg_len, gscale):
        obj = state.objective
        alpha, codes = state.saved
        nb, tmax, _ = em.shape
        if obj.aggregate == "max":
            grad = algebra_backward_max(codes, in_len, tg_len, obj.weights, tmax)
        else:
            grad, _ = algebra_backward_sum(state.extra, alpha, in_len, tg_len, obj.weights)
        grad.mul_(gscale.to(grad.dtype).view(nb, 1, 1))
        return nan_where_infeasible(grad, state.loss, gscale)

    def best_paths(self, state, in_len, tg_len):
        steps, _, _, length = backtrack(state.saved[1], in_len, tg_len)
        return paths_from_steps(steps, length)

    def ctc_forward(self, em, targets, in_len, tg_len, *, keep: bool) -> CTCState:
        alpha, logz = ctc_forward(em, targets, in_len, tg_len)
        return CTCState(-logz, (alpha if keep else None,))

    def ctc_backward(self, state, em, targets, in_len, tg_len, gscale):
        nb = em.shape[0]
        grad = ctc_backward(em, targets, in_len, tg_len, state.saved[0], -state.loss)
        grad.mul_(gscale.to(grad.dtype).view(nb, 1, 1))
        return nan_where_infeasible(grad, state.loss, gscale)


def paths_from_steps(steps: torch.Tensor, length: torch.Tensor) -> list[list[int] | None]:
    """Best paths in order from ``(0, 0)`` from ``steps (N, L)`` (codes from the end
    backwards) and ``length (N,)`` (−1: no path), as :func:`backtrack` returns them."""
    steps, length = steps.cpu(), length.cpu()
    out: list[list[int] | None] = []
    for b in range(steps.shape[0]):
        k = int(length[b])
        out.append(None if k < 0 else steps[b, :k].flip(0).tolist())
    return out
