"""Scale-out: the same command on N workers under `torchrun` (one process per GPU or CPU worker).

    torchrun --nproc_per_node 8 -m ddmkit sample --model M --num 50000 --out runs/x
    torchrun --nproc_per_node 8 -m ddmkit evaluate runs/x

`init(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
starts the process group (gloo on CPU, nccl on CUDA) and returns a `Dist` with the rank, the world
size and the device of this worker ('auto' is `cuda:LOCAL_RANK` where CUDA is present, else cpu).
Without those variables (or with WORLD_SIZE=1) everything is a no-op: rank 0 of 1, no process group.

Collectives used by ddmkit are few and small: `barrier`, `all_reduce_sum` (float64 sums, e.g. the
feature sums and outer products of `FeatureStats`), `all_gather_object` and `broadcast_object`
(manifest details). Samples never travel between workers: each writes its own part files into the
shared output folder (which must therefore be on a filesystem all workers see) and rank 0 merges.

$DDMKIT_DIST_TIMEOUT (seconds, default 7200) bounds how long a collective waits for a slow worker.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import numpy as np

from .errors import DdmkitError

TIMEOUT_ENV = "DDMKIT_DIST_TIMEOUT"


@dataclass
class Dist:
    """This worker's place in the run: rank of world_size, its device, the backend (None: one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every worker arrives (no-op for one process)."""
        if self.enabled:
            import torch.distributed as td

            if self.backend == "nccl":
                td.barrier(device_ids=[self.local_rank])
            else:
                td.barrier()

    def all_reduce_sum(self, values: Any) -> np.ndarray:
        """Element-wise sum over workers of a float64 array (same shape on every worker)."""
        arr = np.asarray(values, dtype=np.float64)
        if not self.enabled:
            return arr.copy()
        import torch
        import torch.distributed as td

        t = torch.from_numpy(np.ascontiguousarray(arr)).clone()
        if self.backend == "nccl":
            t = t.to(self.device)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t.cpu().numpy()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every worker (small picklable objects only)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s obj on every worker."""
        if not self.enabled:
            return obj
        import torch.distributed as td

        box = [obj if self.rank == src else None]
        td.broadcast_object_list(box, src=src)
        return box[0]

    def describe(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) when they are absent."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DdmkitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise DdmkitError(f"bad distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def is_launched() -> bool:
    """True when this process is one of several torchrun workers."""
    return env_world()[1] > 1


def resolve_device(name: str, local_rank: int = 0, distributed: bool = False) -> str:
    """'auto' -> CUDA if present (`cuda:LOCAL_RANK` under torchrun), else cpu; 'cuda' under torchrun
    -> `cuda:LOCAL_RANK`; anything else as given (checked)."""
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        name = "cuda"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DdmkitError(f"--device {name} asked for, but CUDA is not available here; use --device cpu")
        if name == "cuda" and distributed:
            if local_rank >= torch.cuda.device_count():
                raise DdmkitError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                                  "start at most one worker per GPU (--nproc_per_node)")
            return f"cuda:{local_rank}"
        return name
    if name == "cpu":
        return name
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise DdmkitError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    return name


def init(device: str = "auto") -> Dist:
    """Start (or join) the process group when launched by torchrun; returns this worker's `Dist`."""
    rank, world, local = env_world()
    dev = resolve_device(device, local, distributed=world > 1)
    if world == 1:
        return Dist(0, 1, 0, dev, None)
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return Dist(td.get_rank(), td.get_world_size(), local, dev, td.get_backend())
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DdmkitError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun "
                          "(torchrun --nproc_per_node N -m ddmkit ...)")
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(dev))
    try:
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "7200")))
    except ValueError:
        raise DdmkitError(f"${TIMEOUT_ENV} must be a number of seconds") from None
    kwargs = {"device_id": torch.device(dev)} if backend == "nccl" else {}
    td.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, timeout=timeout,
                          **kwargs)
    return Dist(rank, world, local, dev, backend)


def shutdown() -> None:
    """Leave the process group (if one was started)."""
    try:
        import torch.distributed as td

        if td.is_available() and td.is_initialized():
            td.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass


@contextmanager
def session(device: str = "auto") -> Iterator[Dist]:
    """`init(device)` for the length of a command, then `shutdown()`."""
    dist = init(device)
    try:
        yield dist
    finally:
        if dist.enabled:
            shutdown()


def split(items: list[int] | np.ndarray, rank: int, world: int) -> list[int]:
    """This rank's share of `items`: every world-th item from position rank (balanced, deterministic)."""
    return [int(i) for i in list(items)[rank::world]]


def block(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's contiguous block when range(n) is cut into `world` near-equal blocks."""
    lo = (n * rank) // world
    hi = (n * (rank + 1)) // world
    return lo, hi
