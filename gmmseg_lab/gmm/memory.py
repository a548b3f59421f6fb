"""Per-component memories for the online M-step: the paper's FIFO queue, or decayed sufficient statistics.

Both answer the same question for the M-step, ``(count, sum x, sum x^2)`` per component, so the
classifier's M-step is one function whichever memory holds the data. Their state lives in buffers,
so it is saved in checkpoints and moved with ``.to(device)``.

Both take a whole batch at once (:meth:`FIFOMemory.push_many`, :meth:`StatsMemory.push_many`): rows
tagged with their component slot, at most ``max_per_slot`` evenly spaced rows kept per slot
(:func:`evenly_spaced_keep`), every slot written by the same few tensor operations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .segments import group_rows, segment_sum

#: Float64 entries per block when :meth:`FIFOMemory.moments` reads the queue (2 MB): the sums are
#: float64, and a float64 copy of the whole queue would be gigabytes at the release's sizes; a block
#: this small stays in cache while it is converted, squared and summed (faster here than 32 MB blocks).
MOMENTS_BLOCK = 2**18


def _round_half_even_div(num: Tensor, den: int) -> Tensor:
    """``round(num / den)`` for integer tensors, ties to even (as ``torch.round``), exactly."""
    quo, rem = torch.div(num, den, rounding_mode="floor"), torch.remainder(num, den)
    up = (2 * rem > den) | ((2 * rem == den) & (quo % 2 == 1))
    return quo + up.long()


def evenly_spaced_keep(rank: Tensor, size: Tensor, k: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Which rows an evenly spaced subsample of at most ``k`` per group keeps, for every group at once.

    A group of ``n > k`` rows keeps the rows at ``round(j * (n - 1) / (k - 1))``, ``j = 0 .. k-1``
    (first and last included; ``k = 1`` keeps the first): ``torch.linspace(0, n - 1, k).round()``
    in exact integer arithmetic. Float32 ``linspace`` gives the same indices except at exact ties
    (``j * (n - 1) / (k - 1)`` half-way between two integers, possible only for odd ``k``), which its
    rounding error can push either way; here ties go to even. Deterministic, the same on any device.

    Args:
        rank: ``[N]`` int64 position of each row within its group. size: ``[N]`` its group's size.
        k: at most this many rows per group; ``None`` keeps every row.

    Returns:
        ``(keep, new_rank, new_size)``: ``[N]`` bool, and the kept rows' positions within the
        subsample and the subsample's size (meaningful where ``keep``).
    """
    if k is None:
        return torch.ones_like(rank, dtype=torch.bool), rank, size
    big = size > k
    if k == 1:
        hit, j = rank == 0, torch.zeros_like(rank)
    else:
        # j * (n - 1) / (k - 1) rounds to `rank` only for j = floor or ceil of rank * (k - 1) / (n - 1),
        # because consecutive positions are more than 1 apart when n > k.
        span = (size - 1).clamp_min(1)
        low = torch.div(rank * (k - 1), span, rounding_mode="floor")
        high = (low + 1).clamp_max(k - 1)
        hit_low = _round_half_even_div(low * span, k - 1) == rank
        hit_high = _round_half_even_div(high * span, k - 1) == rank
        hit, j = hit_low | hit_high, torch.where(hit_low, low, high)
    keep = ~big | hit
    return keep, torch.where(big, j, rank), size.clamp_max(k)


class FIFOMemory(nn.Module):
    """One ring buffer of embeddings per component (GMMSeg's release memory).

    Holds ``num_slots x capacity x dim`` floats. Slots never written are tracked by ``count`` and never
    read as data. A slot's rows are written from position 0 on and wrap around only once all
    ``capacity`` are full, so its first ``count`` rows hold its data and the rest are still zero.

    Args:
        num_slots: number of components in all (``C * M``). capacity: samples kept per component.
        dim: embedding dimension D.
    """

    def __init__(self, num_slots: int, capacity: int, dim: int):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"memory_size must be >= 1, got {capacity}")
        self.capacity = capacity
        self.register_buffer("queue", torch.zeros(num_slots, capacity, dim))
        self.register_buffer("ptr", torch.zeros(num_slots, dtype=torch.long))
        self.register_buffer("count", torch.zeros(num_slots, dtype=torch.long))

    def push(self, slot: int, samples: Tensor) -> None:
        """Append ``samples`` ``[n, D]`` to component ``slot``, overwriting its oldest entries when full."""
        self.push_many(torch.full((samples.shape[0],), slot, dtype=torch.long, device=samples.device), samples)

    def push_many(self, slots: Tensor, samples: Tensor, max_per_slot: int | None = None) -> None:
        """Append each row of ``samples`` to its slot, every slot at once.

        Args:
            slots: ``[n]`` int64 slot of each row. samples: ``[n, D]``.
            max_per_slot: keep at most this many evenly spaced rows per slot
                (:func:`evenly_spaced_keep`); ``None`` keeps them all.

        The rows of one slot are appended in the order given, from the slot's write pointer on,
        wrapping around; when more than ``capacity`` arrive at once only the newest survive.
        """
        if samples.shape[0] == 0:
            return
        num_slots, capacity = self.queue.shape[0], self.capacity
        order, sorted_slots, rank, counts = group_rows(slots, num_slots)
        keep, rank, size = evenly_spaced_keep(rank, counts.index_select(0, sorted_slots), max_per_slot)
        # Of what a slot keeps, only the newest `capacity` rows survive.
        dropped = (size - capacity).clamp_min(0)
        kept = (keep & (rank >= dropped)).nonzero(as_tuple=True)[0]
        order, sorted_slots, rank = order[kept], sorted_slots[kept], (rank - dropped)[kept]
        position = (self.ptr.index_select(0, sorted_slots) + rank) % capacity
        # Positions are distinct within a slot (rank < capacity): a plain scatter, no accumulation.
        flat = self.queue.view(num_slots * capacity, -1)
        flat.index_copy_(0, sorted_slots * capacity + position, samples.index_select(0, order).to(self.queue.dtype))
        written = torch.bincount(sorted_slots, minlength=num_slots)
        self.ptr.copy_((self.ptr + written) % capacity)
        self.count.copy_((self.count + written).clamp_max(capacity))

    def valid(self, slot: int) -> Tensor:
        """The stored samples of component ``slot``, ``[count, D]`` (order not meaningful)."""
        return self.queue[slot, : int(self.count[slot])]

    def moments(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(count[S], sum[S, D], sum_sq[S, D])`` of the stored samples of the given slots, float64.

        Blocks of slots (and, for long queues, of rows) at a time, about :data:`MOMENTS_BLOCK`
        float64 entries each, so the loop runs over the data in fixed-size pieces rather than over
        slots. A block reads only its slots' first ``max(count)`` rows: rows past a slot's ``count``
        were never written and are zero, so they add nothing. A float64 copy of the whole queue
        would be gigabytes at the release's sizes.
        """
        slots = slots.to(device=self.queue.device, dtype=torch.long)
        dim = self.queue.shape[2]
        count = self.count.index_select(0, slots)
        total = torch.zeros(len(slots), dim, dtype=torch.float64, device=self.queue.device)
        total_sq = torch.zeros_like(total)
        if len(slots) == 0:
            return count.double(), total, total_sq
        # Fullest slots first: each block then reads about as many rows as its slots hold.
        by_count = torch.argsort(count, descending=True)
        sorted_count = count.index_select(0, by_count).tolist()
        start = 0
        while start < len(slots) and sorted_count[start] > 0:
            rows = sorted_count[start]
            stop = min(len(slots), start + max(1, MOMENTS_BLOCK // (rows * dim)))
            chosen = slots.index_select(0, by_count[start:stop])
            window = max(1, MOMENTS_BLOCK // ((stop - start) * dim))
            for first in range(0, rows, window):
                block = self.queue[:, first : min(first + window, rows)].index_select(0, chosen).double()  # [s, w, D]
                total[start:stop] += block.sum(dim=1)
                total_sq[start:stop] += block.square_().sum(dim=1)
            start = stop
        # Back from the fullest-first order to the order of `slots`.
        total = torch.empty_like(total).index_copy_(0, by_count, total)
        total_sq = torch.empty_like(total_sq).index_copy_(0, by_count, total_sq)
        return count.double(), total, total_sq


class StatsMemory(nn.Module):
    """Decayed sufficient statistics per component: ``C * M * (2D + 1)`` numbers instead of a queue.

    Adding ``n`` samples to a component first multiplies its statistics by ``decay ** n``, so a sample's
    weight is ``decay ** (samples that arrived after it)``: with ``decay = 1 - 1/capacity`` the memory
    has the same effective length as a FIFO of ``capacity`` samples, and with ``decay = 1`` nothing is
    forgotten and the M-step equals the batch M-step on everything pushed. Float64 accumulators keep
    long runs exact enough.
    """

    def __init__(self, num_slots: int, dim: int, decay: float):
        super().__init__()
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"stats_decay must be in (0, 1], got {decay}")
        self.decay = decay
        self.register_buffer("weight", torch.zeros(num_slots, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(num_slots, dim, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(num_slots, dim, dtype=torch.float64))

    def push(self, slot: int, samples: Tensor) -> None:
        """Fold ``samples`` ``[n, D]`` into component ``slot``'s statistics."""
        self.push_many(torch.full((samples.shape[0],), slot, dtype=torch.long, device=samples.device), samples)

    def push_many(self, slots: Tensor, samples: Tensor, max_per_slot: int | None = None) -> None:
        """Fold each row of ``samples`` ``[n, D]`` into its slot's statistics (``slots`` ``[n]`` int64),
        every slot at once; ``max_per_slot`` as in :meth:`FIFOMemory.push_many`. A slot that gets
        ``n_s`` rows in one call is decayed by ``decay ** n_s`` first."""
        if samples.shape[0] == 0:
            return
        num_slots = self.weight.shape[0]
        if max_per_slot is not None:
            order, sorted_slots, rank, counts = group_rows(slots, num_slots)
            keep, _, _ = evenly_spaced_keep(rank, counts.index_select(0, sorted_slots), max_per_slot)
            kept = keep.nonzero(as_tuple=True)[0]
            slots, samples = sorted_slots[kept], samples.index_select(0, order[kept])
        samples = samples.double()
        n = torch.bincount(slots, minlength=num_slots).double()
        # Slots without new rows get factor 1 and add 0: unchanged, exactly.
        factor = torch.pow(self.decay, n)
        self.weight.copy_(self.weight * factor + n)
        self.total.copy_(self.total * factor[:, None] + segment_sum(samples, slots, num_slots))
        self.total_sq.copy_(self.total_sq * factor[:, None] + segment_sum(samples * samples, slots, num_slots))

    def moments(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(count[S], sum[S, D], sum_sq[S, D])`` of the given slots, float64."""
        return self.weight[slots], self.total[slots], self.total_sq[slots]

    @property
    def count(self) -> Tensor:
        """Effective number of samples per component, ``[C * M]``."""
        return self.weight
