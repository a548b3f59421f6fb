"""Gathering variable-length batches across ``torch.distributed`` ranks (NCCL or gloo)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_rows(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` ``[n_r, ...]`` from every rank in rank order; ``n_r`` may differ per rank.

    Returns the input unchanged outside a multi-rank process group. Every rank receives the same
    result, so identical deterministic computations on it keep ranks bit-identical.
    """
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    local_n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(sizes, local_n)
    sizes_list = [int(s.item()) for s in sizes]
    longest = max(sizes_list)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([chunk[:n] for chunk, n in zip(chunks, sizes_list)], dim=0)
