"""Multi-process training helpers (``torchrun``): process group, batch shards, gradient / log averaging.

The :class:`~medsam_kit.engine.trainer.Trainer` runs unchanged under ``torchrun --nproc_per_node N``:
:func:`init_distributed` reads torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` and joins the
process group (NCCL on CUDA with device ``cuda:LOCAL_RANK``, gloo on CPU). Without those variables
(or with ``WORLD_SIZE=1``) everything here is a no-op and training is single-process.

How a global batch is shared (:func:`shard`): the global micro-batch of ``B`` samples (sample
indices ``m*B .. m*B+B-1`` of the sampler) is cut into ``N`` contiguous shares of ``B / N``; rank
``r`` takes rows ``r*B/N .. (r+1)*B/N - 1``. Every rank derives the same global indices, so which
samples a step sees does not depend on the number of processes, and per-batch randomness that is
drawn for the whole global batch and then sliced (``SpatialAugment(batch, step, start, global_size)``)
does not either.

Why gradients are averaged by hand (:func:`average_gradients`) instead of wrapping the model in
``DistributedDataParallel``: methods call ``model.encode`` / ``model.decode`` / ``coarse_logits``,
not ``model.forward``, and DDP only hooks the gradients of a ``forward`` call. The averaging is one
``all_reduce`` per flattened bucket of gradients (as DDP's buckets), after the micro-batches of a step
and before unscaling / clipping, so every rank clips the same averaged gradient and takes the same step.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

#: Gradient bucket size for the all-reduce (DDP's default is 25 MiB).
BUCKET_BYTES = 25 * 2**20
#: How long a rank waits for the others (rank 0 validating a large val split, preparing raw data).
TIMEOUT = timedelta(minutes=int(os.environ.get("MEDSAM_KIT_DIST_TIMEOUT_MIN", "60")))


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process (collectives needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and validates."""
        return self.rank == 0


def env_info() -> DistInfo:
    """The job layout from torchrun's environment variables (single process when they are absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE / RANK / LOCAL_RANK must be integers (set by torchrun): {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device, bool]:
    """Join the process group when running under torchrun with more than one process.

    Args:
        device: the configured device (:func:`medsam_kit.engine.trainer.resolve_device`).

    Returns:
        ``(info, device, owned)``: the layout; the device this rank uses (``cuda:LOCAL_RANK`` for
        any CUDA device, as each process drives one GPU; pick GPUs with ``CUDA_VISIBLE_DEVICES``);
        ``owned`` is True when this call created the process group (the caller destroys it with
        :func:`cleanup`). A process group created beforehand by the caller is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), env_info().local_rank)
        owned = False
    else:
        info = env_info()
        owned = info.enabled
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if owned:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    return info, device, owned


def cleanup(owned: bool) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if owned and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank (picklable objects; no-op in a single process)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(global_size: int, info: DistInfo, key: str) -> tuple[int, int]:
    """``(start, size)`` of this rank's contiguous share of a global batch of ``global_size``.

    Raises:
        ValueError: ``global_size`` is not a multiple of the process count (``key`` names the setting).
    """
    if global_size % info.world_size:
        raise ValueError(
            f"{key} is {global_size}, which {info.world_size} processes (WORLD_SIZE) cannot share evenly: it is "
            f"the global batch, split across processes; use a multiple of {info.world_size}"
        )
    size = global_size // info.world_size
    return info.rank * size, size


class ShardSampler(Sampler[int]):
    """Sample indices of this rank's shares of consecutive global micro-batches (for a ``DataLoader``).

    Yields ``m * global_size + start + j`` for micro-batch ``m`` in ``[first, last)`` and ``j`` in
    ``[0, size)``; with ``batch_size=size`` each loader batch is one share. With one process it is
    ``range(first * B, last * B)``.
    """

    def __init__(self, first: int, last: int, global_size: int, start: int, size: int) -> None:
        self.first, self.last, self.global_size, self.start, self.size = first, last, global_size, start, size

    def __iter__(self) -> Iterator[int]:
        for m in range(self.first, self.last):
            base = m * self.global_size + self.start
            yield from range(base, base + self.size)

    def __len__(self) -> int:
        return max(0, self.last - self.first) * self.size


def broadcast_parameters(tensors: Sequence[torch.Tensor], info: DistInfo) -> None:
    """Copy rank 0's values of ``tensors`` (parameters, buffers) to every rank, in place."""
    if not info.enabled:
        return
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: Sequence[torch.Tensor], info: DistInfo, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Average ``.grad`` of ``params`` over ranks in place (flattened buckets, one all-reduce each).

    A parameter whose gradient is None on some ranks (e.g. the mask decoder when a rank's share has
    no foreground to prompt) counts as zero there; one that has no gradient on any rank stays None,
    as in a single process (the optimizer then skips it).
    """
    if not info.enabled or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has)
    active = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    for p in active:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}  # (device, dtype) -> buckets of <= bucket_bytes
    filled: dict[tuple, int] = {}
    for p in active:  # same order on every rank: the parameter list is built identically
        key = (p.grad.device, p.grad.dtype)
        groups = buckets.setdefault(key, [[]])
        size = p.grad.numel() * p.grad.element_size()
        if groups[-1] and filled[key] + size > bucket_bytes:
            groups.append([])
            filled[key] = 0
        groups[-1].append(p.grad)
        filled[key] = filled.get(key, 0) + size
    for groups in buckets.values():
        for grads in groups:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= info.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def average_logs(logs: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Mean of each logged value over ranks (every rank must log the same keys).

    Raises:
        RuntimeError: the ranks logged different keys (a method must return the same log keys on every rank).
    """
    if not info.enabled:
        return logs
    keys = sorted(logs)
    # A checksum of the key names rides along: equal on every rank iff the sum is world_size times ours.
    check = float(zlib.crc32("\0".join(keys).encode()) % 2**20)
    values = torch.tensor([logs[k] for k in keys] + [check], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    if values[-1].item() != check * info.world_size:
        raise RuntimeError(f"rank {info.rank} logged keys {keys}, which differ from another rank's; a method "
                           "must return the same log keys on every rank")
    return {k: v / info.world_size for k, v in zip(keys, values[:-1].tolist(), strict=True)}
