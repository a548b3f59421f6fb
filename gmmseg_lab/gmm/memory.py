"""Per-component memories for the online M-step: the paper's FIFO queue, or decayed sufficient statistics.

Both answer the same question for the M-step, ``(count, sum x, sum x^2)`` per component, so the
classifier's M-step is one function whichever memory holds the data. Their state lives in buffers,
so it is saved in checkpoints and moved with ``.to(device)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FIFOMemory(nn.Module):
    """One ring buffer of embeddings per component (GMMSeg's release memory).

    Holds ``num_slots x capacity x dim`` floats. Slots never written are tracked by ``count`` and never
    read as data.

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
        n = samples.shape[0]
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` survive anyway
            samples, n = samples[-self.capacity :], self.capacity
        start = int(self.ptr[slot])
        idx = (torch.arange(n, device=samples.device) + start) % self.capacity
        self.queue[slot, idx] = samples.to(self.queue.dtype)
        self.ptr[slot] = (start + n) % self.capacity
        self.count[slot] = min(int(self.count[slot]) + n, self.capacity)

    def valid(self, slot: int) -> Tensor:
        """The stored samples of component ``slot``, ``[count, D]`` (order not meaningful)."""
        return self.queue[slot, : int(self.count[slot])]

    def moments(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(count[S], sum[S, D], sum_sq[S, D])`` of the stored samples of the given slots, float64.

        One slot at a time over its valid rows only: a float64 copy of the whole queue would be
        gigabytes at the release's sizes.
        """
        dim = self.queue.shape[2]
        count = torch.zeros(len(slots), dtype=torch.float64, device=self.queue.device)
        total = torch.zeros(len(slots), dim, dtype=torch.float64, device=self.queue.device)
        total_sq = torch.zeros_like(total)
        for i, slot in enumerate(slots.tolist()):
            rows = self.valid(slot).double()
            count[i] = rows.shape[0]
            total[i] = rows.sum(dim=0)
            total_sq[i] = (rows * rows).sum(dim=0)
        return count, total, total_sq


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
        n = samples.shape[0]
        if n == 0:
            return
        samples = samples.double()
        factor = self.decay**n
        self.weight[slot] = self.weight[slot] * factor + n
        self.total[slot] = self.total[slot] * factor + samples.sum(dim=0)
        self.total_sq[slot] = self.total_sq[slot] * factor + (samples * samples).sum(dim=0)

    def moments(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(count[S], sum[S, D], sum_sq[S, D])`` of the given slots, float64."""
        return self.weight[slots], self.total[slots], self.total_sq[slots]

    @property
    def count(self) -> Tensor:
        """Effective number of samples per component, ``[C * M]``."""
        return self.weight
