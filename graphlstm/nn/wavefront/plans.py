"""Plans of a lattice scan: which rows each step updates and reads, on dense grids
(anti-diagonals) or on a schedule's levels (see :mod:`graphlstm.nn.wavefront`)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from graphlstm.lattice import c_strides

# --------------------------------------------------------------------------
# Plans: the steps, and which rows each step reads. State buffers are
# [G, rows, R*H] with the rows of a step contiguous (step-sorted order), so a
# step writes a slice; predecessor gathers index them as [G*rows*R, H] (slot
# d of a Grid LSTM node holds its pair for dimension d).
#
# The backward pulls rather than pushes: each step stores the gradients with
# respect to the predecessor states it gathered ([G*m*D, H]), and a step
# collects from its successors' stores what they owe it (index_select, about
# twice as fast as index_add_ on CPU).
# --------------------------------------------------------------------------


class DensePlan:
    r"""Anti-diagonal steps over a batch of padded ``shape`` grids, several directions.

    Direction :math:`k` of sample :math:`b` is scanned in its own frame:
    coordinate :math:`p_d` becomes :math:`s_{b,d} - 1 - p_d` where dimension
    :math:`d` is reversed and :math:`p_d < s_{b,d}` (the sample's own size),
    and stays otherwise. So every direction of every sample starts at its own
    corner, and its padding comes after its valid cells in every dimension,
    where no valid cell reads it. Step :math:`t` holds the frame cells with
    coordinate sum :math:`t`; all their successors lie in step :math:`t+1`,
    so the backward keeps one step's gradient store at a time.

    Buffer rows of direction ``k``: ``j*B + b`` for the ``j``-th cell in step
    order and sample ``b``, then ``B`` boundary rows. Inputs ``xs [G, N*B, C]``
    in the same order come from ``x [B*N, C]`` through :attr:`x_idx`.
    """

    def __init__(self, shape, directions, batch: int, sizes: Tensor | None, slots: int, device):
        D, N, B, G, R = len(shape), math.prod(shape), batch, len(directions), slots
        self.G, self.B, self.D, self.R, self.N = G, B, D, R, N
        self.rows = (N + 1) * B
        strides = torch.tensor(c_strides(shape), device=device)
        ar = torch.arange(N, device=device)
        coords = torch.stack(  # [N, D]
            [ar // s % n for s, n in zip(strides.tolist(), shape, strict=True)], 1
        )
        step = coords.sum(1)
        cells = torch.sort(step, stable=True).indices  # frame cell at each step position
        pos = torch.empty_like(cells)
        pos[cells] = ar
        ptr = [0] + torch.bincount(step, minlength=sum(shape) - D + 1).cumsum(0).tolist()
        self.ptr, self.num_steps = ptr, len(ptr) - 1

        bb = torch.arange(B, device=device)
        dd = torch.arange(D, device=device)
        gg = torch.arange(G, device=device).view(G, 1, 1, 1)
        qc = coords[cells]
        # Predecessor state rows (in units of H) of every (g, position, b, d).
        pred = torch.where(qc > 0, pos[(cells[:, None] - strides).clamp_min(0)], N)  # [N, D]
        gidx = (gg * self.rows + pred[:, None, :] * B + bb[:, None]) * R
        self.gidx = _by_step(gidx + (dd if R > 1 else 0), ptr)
        # Successor rows in the next step's store [G, n', B, D], or its final zero row.
        last = torch.tensor(shape, device=device) - 1
        succ = torch.where(qc < last, pos[(cells[:, None] + strides).clamp_max(N - 1)], -1)
        sizes_t = torch.tensor(ptr, device=device).diff()
        step_of = torch.repeat_interleave(torch.arange(self.num_steps, device=device), sizes_t)
        nxt = (step_of + 1).clamp_max(self.num_steps - 1)
        n_next = sizes_t[nxt][:, None, None]  # [N, 1, 1]
        local = (succ - torch.tensor(ptr, device=device)[nxt][:, None])[:, None, :]
        loc = ((gg * n_next + local) * B + bb[:, None]) * D + dd  # [G, N, B, D]
        self.succ = _by_step(torch.where(succ[:, None, :] >= 0, loc, G * n_next * B * D), ptr)

        # Frame maps; `ext` is each sample's own extent (the full shape without sizes).
        flips = torch.tensor(
            [[bool(k >> d & 1) for d in range(D)] for k in directions], device=device
        ).view(G, 1, 1, D)
        ext = sizes if sizes is not None else torch.tensor(shape, device=device)[None]
        p, e = coords[None, None], ext[None, :, None, :]
        q = torch.where(flips & (p < e), e - 1 - p, p)  # [G, Bs, N, D]
        kpos = pos[(q * strides).sum(-1)].expand(G, B, N)  # step position of original cell p
        p_of_k = torch.empty_like(kpos).scatter_(2, kpos, ar.expand_as(kpos))
        self.x_idx = (bb * N + p_of_k.transpose(1, 2)).reshape(-1)  # [G, N(position), B]
        self.x_inv = _inverse(self.x_idx.view(G, N * B), N * B)
        base = torch.arange(G, device=device)[:, None] * self.rows + bb  # [G, B]
        self.out_idx = (base[:, :, None] + kpos * B).reshape(-1)  # [G, B, N(original)]
        self.out_inv = _inverse(self.out_idx.view(1, -1), G * self.rows)
        self.last = (base + pos[((ext - 1) * strides).sum(-1)].expand(B) * B).reshape(-1)
        self.boundary = (base + N * B).reshape(-1)
        self.mask = (coords[None] < ext[:, None]).all(-1) if sizes is not None else None  # [B, N]

    def step_rows(self, t: int) -> tuple[int, int]:
        return self.ptr[t] * self.B, self.ptr[t + 1] * self.B

    def gather(self, flat: Tensor, t: int, m: int) -> Tensor:
        return flat.index_select(0, self.gidx[t])

    def new_store(self, like: Tensor) -> dict:
        return {"like": like}

    def store_slot(self, store: dict, t: int, m: int, H: int) -> Tensor:
        """Where step ``t`` writes the gradients of its ``G*m*D`` gathered rows."""
        buf = store[t] = store["like"].new_empty(self.G * m * self.D + 1, H)
        buf[-1] = 0
        store.pop(t + 2, None)  # a step is only read by the one before it
        return buf[:-1]

    def pull(self, store: dict, t: int, m: int) -> Tensor | None:
        """What the successors of step ``t`` owe its states, ``[G*m*R, H]``."""
        if t + 1 >= self.num_steps:
            return None
        got = store[t + 1].index_select(0, self.succ[t])
        if self.R == 1 and self.D > 1:
            got = got.view(-1, self.D, got.size(1)).sum(1)
        return got

    def first_store(self, store: dict) -> Tensor:
        return store[0][:-1]


@functools.lru_cache(maxsize=8)
def _cached_plan(shape, directions, batch, slots, device) -> DensePlan:
    # Building the index tables of a 64x64 batch costs ~15% of a forward;
    # training sees the same shape again and again. Plans are never mutated.
    return DensePlan(shape, directions, batch, None, slots, device)


def _by_step(table: Tensor, ptr: list) -> list[Tensor]:
    """Per step ``t``, the flattened ``[G, n_t, ...]`` block of a ``[G, N, ...]`` table.

    One reorder and a split into views, instead of a copy per step.
    """
    G, N = table.shape[:2]
    sizes = torch.tensor(ptr, device=table.device).diff()
    step_of = torch.repeat_interleave(torch.arange(sizes.numel(), device=table.device), sizes)
    ar = torch.arange(N, device=table.device)
    key = step_of * (G * N) + torch.arange(G, device=table.device)[:, None] * N + ar
    flat = table.reshape(G * N, -1).index_select(0, key.view(-1).argsort()).view(-1)
    return list(flat.split((sizes * (flat.numel() // N)).tolist()))


def _inverse(idx: Tensor, rows: int) -> Tensor:
    """For ``idx [fold, n]`` picking rows of a ``rows``-row source: where each
    ``(k, row)`` landed, ``[fold * rows]`` (0 for rows never picked)."""
    fold, n = idx.shape
    inv = idx.new_zeros(fold, rows)
    inv.scatter_(1, idx, torch.arange(fold * n, device=idx.device).view(fold, n))
    return inv.view(-1)


class GraphPlan:
    """Levels of a schedule on a typed graph; one direction, one sample (``G = B = 1``).

    Rows are the level-sorted node positions of the schedule. Predecessor
    rows are summed per (node, type) slot, so several visited in-edges of one
    type add up; a type without one reads zeros.
    """

    def __init__(self, schedule, edge_type: Tensor, ndim: int, slots: int):
        self.G, self.B, self.D, self.R = 1, 1, ndim, slots
        self.rows = schedule.num_nodes
        self.num_steps = schedule.num_levels
        self.boundary = None
        ptr, vptr = schedule.ptr, schedule.visited_ptr
        self.ptr = ptr
        t = edge_type[schedule.visited_eid]
        src_pos, dst_pos = schedule.visited_src_pos, schedule.visited_dst_pos
        src = src_pos * slots + (t if slots > 1 else 0)
        dst = dst_pos * ndim + t
        steps = range(self.num_steps)
        self.src = [src[vptr[s] : vptr[s + 1]] for s in steps]
        self.dst = [dst[vptr[s] : vptr[s + 1]] - ptr[s] * ndim for s in steps]
        # The same edges grouped by the level of their source, for the backward pull.
        by_src = torch.argsort(src_pos, stable=True)
        src_level = schedule.level[schedule.perm[src_pos[by_src]]]
        sptr = [0] + torch.bincount(src_level, minlength=self.num_steps).cumsum(0).tolist()
        src, dst = src[by_src], dst[by_src]
        self.pull_src = [dst[sptr[s] : sptr[s + 1]] for s in steps]
        self.pull_dst = [src[sptr[s] : sptr[s + 1]] - ptr[s] * slots for s in steps]

    def step_rows(self, t: int) -> tuple[int, int]:
        return self.ptr[t], self.ptr[t + 1]

    def gather(self, flat: Tensor, t: int, m: int) -> Tensor:
        out = flat.new_zeros(m * self.D, flat.size(1))
        return out.index_add_(0, self.dst[t], flat.index_select(0, self.src[t]))

    def new_store(self, like: Tensor) -> Tensor:
        # Successors may sit in any later level: keep every level's gradients.
        return like.new_empty(self.rows * self.D, like.size(-1))

    def store_slot(self, store: Tensor, t: int, m: int, H: int) -> Tensor:
        return store[self.ptr[t] * self.D : self.ptr[t + 1] * self.D]

    def pull(self, store: Tensor, t: int, m: int) -> Tensor | None:
        if self.pull_src[t].numel() == 0:
            return None
        out = store.new_zeros(m * self.R, store.size(1))
        return out.index_add_(0, self.pull_dst[t], store.index_select(0, self.pull_src[t]))
