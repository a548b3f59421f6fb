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


def raise_together(error: BaseException | None, device: torch.device | str = "cpu", what: str = "input") -> None:
    """Collective check: if any rank has an ``error``, every rank raises.

    A rank that refuses its input alone would leave the others waiting in the next collective (gloo
    until its timeout, NCCL possibly for ever). Every rank of the process group must call this at the
    same point, with its own ``error`` or ``None``: one scalar all-reduce when all are fine; when not,
    the ranks that had an error re-raise it and the others raise ``ValueError`` naming the ranks and
    their messages. ``device``: where the flag lives (a CUDA device with NCCL). Outside a multi-rank
    process group: raises ``error`` when it is not ``None``.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag)
    if int(flag.item()) == 0:
        return
    messages: list = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    bad = [(rank, msg) for rank, msg in enumerate(messages) if msg is not None]
    raise ValueError(
        f"{what} is invalid on rank {', '.join(str(r) for r, _ in bad)} "
        f"({'; '.join(f'rank {r}: {m}' for r, m in bad)}); every rank stops"
    )
