"""The ``torchrun`` process group shared by training and the dump: join it, ask where we are, leave it."""
from __future__ import annotations

import os

import torch

__all__ = ["dist_info", "init_distributed", "close_distributed"]


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group (gloo on CPU, nccl on GPU); return rank, world size, device."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    dev = torch.device(f"cuda:{local}" if cuda else (device or "cpu"))
    if cuda and world == 1 and device is not None and torch.device(device).index is not None:
        dev = torch.device(device)                  # one process: the GPU the user named (cuda:1)
    if cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, dev


def close_distributed() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
