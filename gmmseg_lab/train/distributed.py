"""Distributed training set-up: the backend by device, DDP on CPU too, the process group on CPU.

Under ``torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch`` the backend follows
the device (:func:`choose_dist_backend`: NCCL with CUDA, gloo without), DDP wraps the model on CPU too
(mmengine's ``init_dist`` selects a CUDA device, so on CPU the process group is created here), and
buffers are not broadcast at each forward: every rank holds the same GMM by construction (its update
gathers every rank's pixels), and the FIFO memory can be hundreds of MB.
"""

from __future__ import annotations

import datetime
import inspect
import os

import torch
import torch.distributed as dist

__all__ = ["choose_dist_backend", "prepare_distributed"]


def choose_dist_backend(requested: str | None = None, cuda_available: bool | None = None) -> str:
    """The ``torch.distributed`` backend for this machine.

    ``None`` or ``"auto"``: ``"nccl"`` with CUDA, ``"gloo"`` without. ``"nccl"`` without CUDA (the
    shipped configs' default; NCCL cannot run without GPUs) becomes ``"gloo"``. Any other explicit
    choice (``"gloo"`` on GPUs, ``"mpi"``, ``"cpu:gloo,cuda:nccl"``) is the user's and is kept.
    """
    cuda = torch.cuda.is_available() if cuda_available is None else bool(cuda_available)
    if requested in (None, "", "auto"):
        return "nccl" if cuda else "gloo"
    if requested == "nccl" and not cuda:
        return "gloo"
    return requested


def _ddp_buffer_kwargs() -> dict:
    """Buffers are kept identical by construction, never broadcast at each forward: the GMM update
    gathers every rank's pixels, and a per-forward broadcast would copy the whole FIFO memory. Where
    torch has ``forward_sync_buffers`` they are still synced once when DDP wraps the model."""
    if "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters:
        return dict(forward_sync_buffers=False)
    return dict(broadcast_buffers=False)


_DDP_TYPES = ("MMDistributedDataParallel", "DistributedDataParallel")


def prepare_distributed(cfg) -> bool:
    """Backend by device, DDP on CPU, and the process group on CPU (mmengine's ``init_dist`` calls
    ``torch.cuda.set_device``). Returns True when this function initialised the process group."""
    cuda = torch.cuda.is_available()
    launcher = cfg.get("launcher", "none")
    env_cfg = dict(cfg.get("env_cfg") or {})
    dist_cfg = dict(env_cfg.get("dist_cfg") or {})
    dist_cfg["backend"] = choose_dist_backend(dist_cfg.get("backend"), cuda)
    env_cfg["dist_cfg"] = dist_cfg
    cfg.env_cfg = env_cfg

    wrapper = cfg.get("model_wrapper_cfg")
    if wrapper is None:
        wrapper = dict(
            type="MMDistributedDataParallel",
            find_unused_parameters=cfg.get("find_unused_parameters", False),
            **_ddp_buffer_kwargs(),
        )
    wrapper = dict(wrapper)
    if not cuda and wrapper.get("type", "MMDistributedDataParallel") in _DDP_TYPES:
        wrapper.setdefault("device_ids", None)  # CPU modules take no device_ids (mmengine passes LOCAL_RANK)
    cfg.model_wrapper_cfg = wrapper

    if cuda or (dist.is_available() and dist.is_initialized()):
        return False
    if launcher != "pytorch":
        raise ValueError(
            f"launcher {launcher!r} needs CUDA (mmengine selects a CUDA device); on CPU run "
            "`torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch`"
        )
    missing = [k for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"--launcher pytorch needs the environment torchrun sets ({', '.join(missing)} not set): "
            "run `torchrun --nproc_per_node N -m gmmseg_lab train ... --launcher pytorch`"
        )
    kwargs = {k: v for k, v in dist_cfg.items() if k != "backend"}
    if isinstance(kwargs.get("timeout"), (int, float)):
        kwargs["timeout"] = datetime.timedelta(seconds=kwargs["timeout"])
    dist.init_process_group(backend=dist_cfg["backend"], **kwargs)
    return True
