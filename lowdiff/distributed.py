"""The process group of a torchrun launch, for training, sampling, evaluation and tuning.

Launched by `torchrun --nproc_per_node=N`, each process joins one group (gloo on CPU, NCCL on
GPUs). Training splits every batch (DDP). Sampling and evaluation split the work by batch:
batch i of a seed list (or dataset) is made by rank i mod N ("every N-th batch"), and rank 0
gathers the results round by round in batch order, so files, grids and float64 statistics
are those of one process; only rank 0 writes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .checks import resolve_device

from .errors import LowdiffError


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the torchrun process group when launched by torchrun; (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(resolve_device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        return dist.get_rank(), dist.get_world_size(), dev
    return 0, 1, dev


def close_distributed(barrier: bool = True) -> None:
    """Leave the process group (after all ranks arrive, unless one was lost: then it is left at
    once), so that no gloo / NCCL thread is still alive when the interpreter exits (which aborts
    the process)."""
    if dist.is_initialized():
        try:
            if barrier:
                dist.barrier()
        except RuntimeError as e:
            if not peer_lost(e):
                raise
        finally:
            dist.destroy_process_group()


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_lost(e: BaseException) -> bool:
    """A collective that failed because another process of the launch ended (crashed, killed,
    stopped): its connection went away. Any other error of a collective is this process's own."""
    return isinstance(e, getattr(dist, "DistNetworkError", ())) or any(marker in str(e) for marker in PEER_GONE)


@contextmanager
def peer_loss_as_error(rank: int, size: int):
    """A collective failing because another process ended becomes one LowdiffError line on this one."""
    try:
        yield
    except RuntimeError as e:
        if size == 1 or not peer_lost(e):
            raise
        raise LowdiffError(f"process {rank} of {size}: another process of the torchrun launch ended (crashed or "
                           f"was stopped), so this one stops too; its log says why ({str(e).splitlines()[0][:120]})"
                           ) from None


@dataclass(frozen=True)
class World:
    """This process's place in the launch: rank, number of processes, device."""
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def join(cls, device: str = "cpu") -> "World":
        rank, size, dev = init_distributed(device)
        return cls(rank, size, dev)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rounds(self, num_batches: int) -> Iterator[int | None]:
        """For each round, the batch this rank makes (None past the end); every rank sees the
        same number of rounds, so the gathers line up."""
        for first in range(0, num_batches, self.size):
            i = first + self.rank
            yield i if i < num_batches else None

    def gather(self, obj) -> list | None:
        """Every rank's `obj` on rank 0, in rank order (batch order within a round); None elsewhere."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = World()
