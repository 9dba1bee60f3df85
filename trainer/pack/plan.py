"""Which sample goes in which batch when samples live in shards: a pure function of (seed, epoch).

    plan = ShardPlan(shard_members=[...], batch_size=32, worker_index=0, worker_count=2, seed=7)
    plan.batch(epoch=3, index=0)     # positions into the (split) dataset
    plan.shard_order(epoch=3)        # the shards in the order this worker reads them

Workers own disjoint shards (every N-th of a seeded permutation, the same in every epoch, so
their shard caches hit from epoch 2 on). Each epoch a worker permutes its shards, cuts them into
blocks of `block_shards`, and shuffles the samples inside each block (the idea of MosaicML
Streaming's py1e): a worker reads a few whole shards at a time, sequentially, and its order is
still shuffled across shards. A block is read in `block_windows` windows, each shuffling the
next 1/`block_windows` of every shard in it, front to back: the first samples of a block need
only the start of each of its shards, so they decode while the rest downloads. `trainer pack`
shuffles the samples into shards, so each window is still a random draw from the dataset, as
from a shuffle buffer of its size. Steps and batch sizes are equal on every worker, as in
`trainer.data.sampling.BatchPlan`: `pad` sizes every worker's epoch to the largest worker's
sample count (repeating the first samples of the epoch), `drop` to the smallest's.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from trainer.data.sampling import REMAINDER_POLICIES, EpochPlan

_OWNER_SALT = 0x0A11
_EPOCH_SALT = 0xB10C


@dataclasses.dataclass(frozen=True, eq=False)
class ShardPlan(EpochPlan):
    _replace_salt = 0x5C1C

    shard_members: tuple[np.ndarray, ...]  # per shard: positions, in their order in the shard
    batch_size: int
    replica_multiple: int = 1
    worker_index: int = 0
    worker_count: int = 1
    seed: int = 0
    remainder: str = "pad"
    shuffle: bool = True
    block_shards: int = 4
    block_windows: int = 8

    def __post_init__(self) -> None:
        if self.remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}")
        if self.batch_size % self.replica_multiple:
            raise ValueError(
                f"batch size {self.batch_size} is not a multiple of the "
                f"{self.replica_multiple} replicas"
            )
        if self.block_shards < 1 or self.block_windows < 1:
            raise ValueError("block_shards and block_windows must be at least 1")
        if not 0 <= self.worker_index < self.worker_count:
            raise ValueError(f"worker {self.worker_index} not in [0, {self.worker_count})")
        used = [i for i, m in enumerate(self.shard_members) if len(m)]
        if len(used) < self.worker_count:
            raise ValueError(
                f"{len(used)} shards cannot be shared by {self.worker_count} workers; "
                "pack with a smaller --shard-size-mb"
            )
        if self.samples_per_epoch == 0:
            raise ValueError("too few samples per worker to fill one batch with remainder 'drop'")

    @functools.cached_property
    def _owners(self) -> list[list[int]]:
        """The shards of each worker: every N-th of a seeded permutation of the non-empty ones."""
        used = np.asarray([i for i, m in enumerate(self.shard_members) if len(m)])
        perm = used[np.random.default_rng([self.seed, _OWNER_SALT]).permutation(len(used))]
        return [sorted(perm[w :: self.worker_count].tolist()) for w in range(self.worker_count)]

    @property
    def shards(self) -> list[int]:
        """This worker's shards."""
        return self._owners[self.worker_index]

    @functools.cached_property
    def members(self) -> np.ndarray:
        """The positions this worker owns, ascending."""
        return np.sort(np.concatenate([self.shard_members[s] for s in self.shards]))

    def _count(self, worker: int) -> int:
        return sum(len(self.shard_members[s]) for s in self._owners[worker])

    @functools.cached_property
    def samples_per_epoch(self) -> int:
        counts = [self._count(w) for w in range(self.worker_count)]
        n = max(counts) if self.remainder == "pad" else min(counts)
        full, rest = divmod(n, self.batch_size)
        multiple = self.replica_multiple
        rest = math.ceil(rest / multiple) if self.remainder == "pad" else rest // multiple
        return full * self.batch_size + rest * multiple

    def shard_order(self, epoch: int) -> list[int]:
        """This worker's shards in the order `epoch` reads them."""
        shards = list(self.shards)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, _EPOCH_SALT, epoch, self.worker_index])
            shards = [shards[i] for i in rng.permutation(len(shards))]
        return shards

    def epoch_order(self, epoch: int) -> np.ndarray:
        return _epoch_order(self, epoch)


@functools.lru_cache(maxsize=4)
def _epoch_order(plan: ShardPlan, epoch: int) -> np.ndarray:
    shards = plan.shard_order(epoch)
    rng = np.random.default_rng([plan.seed, _EPOCH_SALT, epoch, plan.worker_index, 1])
    blocks = []
    for start in range(0, len(shards), plan.block_shards):
        members = [plan.shard_members[s] for s in shards[start : start + plan.block_shards]]
        if not plan.shuffle:
            blocks.append(np.concatenate(members))
            continue
        pieces = [np.array_split(m, plan.block_windows) for m in members]
        for window in zip(*pieces, strict=True):
            blocks.append(rng.permutation(np.concatenate(window)))
    order = np.resize(np.concatenate(blocks), plan.samples_per_epoch)
    order.flags.writeable = False
    return order
