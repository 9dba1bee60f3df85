"""Which sample goes in which batch: deterministic order, sharding and remainder handling.

Everything here is a pure function of plain numbers, so a restarted job (or another worker)
recomputes exactly the same plan; the resumable position is two integers, `(epoch, batch)`.

    plan = BatchPlan(num_samples=1003, batch_size=32, replica_multiple=2,
                     shard_index=0, shard_count=2, seed=7, remainder="pad")
    len(plan)            # batches per epoch, equal on every shard
    plan.batch(epoch=3, index=0)   # positions into the dataset index

Sharding is static: shard k owns every `shard_count`-th sample of a seeded permutation of the
whole dataset, the same in every epoch. Shards are disjoint, their union is the dataset, and a
worker that caches its bytes locally hits its cache from the second epoch on. Each epoch
reshuffles inside the shard with a generator seeded by `(seed, epoch, shard_index)`.

Every shard has the same number of batches of the same sizes, because under a distribution
strategy all workers must take the same number of steps. Each batch size is a multiple of
`replica_multiple` (MirroredStrategy fails on anything else):

* ``pad``: the last batch is rounded up to the next multiple; the fewest samples needed are
  repeated, taken from the start of the same epoch's order;
* ``drop``: the last batch is rounded down; the samples left over differ from epoch to epoch,
  so none is dropped for good.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

REMAINDER_POLICIES = ("pad", "drop")
# Salts keep the generators of different purposes independent for the same user seed.
_SHARD_SALT = 0x5A4D
_EPOCH_SALT = 0xE90C
_REPLACE_SALT = 0x5C1B


class EpochPlan:
    """Equal batches cut from `epoch_order(epoch)`: what BatchPlan and ShardPlan share.

    A plan has `members`, `samples_per_epoch`, `batch_size`, `seed` and `epoch_order`;
    `_replace_salt` keeps each kind's replacement draws its own (and as they always were).
    """

    _replace_salt = _REPLACE_SALT

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    @property
    def padded(self) -> int:
        """Samples this shard repeats per epoch (policy ``pad``)."""
        return max(0, self.samples_per_epoch - len(self.members))

    @property
    def dropped(self) -> int:
        """Samples this shard leaves out per epoch (policy ``drop``)."""
        return max(0, len(self.members) - self.samples_per_epoch)

    def batch_bounds(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range [0, {len(self)})")
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.samples_per_epoch)

    def batch(self, *, epoch: int, index: int) -> np.ndarray:
        start, stop = self.batch_bounds(index)
        return self.epoch_order(epoch)[start:stop]

    def replacement(self, *, epoch: int, slot: int, attempt: int) -> int:
        """A deterministic substitute, from this shard, for a sample that could not be read."""
        rng = np.random.default_rng([self.seed, self._replace_salt, epoch, slot, attempt])
        return int(self.members[rng.integers(len(self.members))])


@dataclasses.dataclass(frozen=True)
class BatchPlan(EpochPlan):
    num_samples: int
    batch_size: int
    replica_multiple: int = 1
    shard_index: int = 0
    shard_count: int = 1
    seed: int = 0
    remainder: str = "pad"
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.remainder not in REMAINDER_POLICIES:
            raise ValueError(
                f"remainder must be one of {REMAINDER_POLICIES}, got {self.remainder!r}"
            )
        if self.replica_multiple < 1 or self.batch_size < 1:
            raise ValueError("batch_size and replica_multiple must be positive")
        if self.batch_size % self.replica_multiple:
            raise ValueError(
                f"batch size {self.batch_size} is not a multiple of the "
                f"{self.replica_multiple} replicas"
            )
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} not in [0, {self.shard_count})")
        if self.num_samples < self.shard_count:
            raise ValueError(f"{self.num_samples} samples cannot fill {self.shard_count} shards")
        if self.samples_per_epoch == 0:
            raise ValueError(
                f"{self.shard_size(self.shard_index)} samples per shard cannot fill one batch "
                f"of a multiple of {self.replica_multiple} with remainder 'drop'"
            )

    def shard_size(self, shard: int) -> int:
        base, extra = divmod(self.num_samples, self.shard_count)
        return base + (1 if shard < extra else 0)

    @functools.cached_property
    def members(self) -> np.ndarray:
        """Dataset positions owned by this shard, in ascending order."""
        if self.shard_count == 1:
            return np.arange(self.num_samples, dtype=np.int64)
        perm = np.random.default_rng([self.seed, _SHARD_SALT]).permutation(self.num_samples)
        return np.sort(perm[self.shard_index :: self.shard_count])

    @functools.cached_property
    def samples_per_epoch(self) -> int:
        """Slots per epoch: identical on every shard."""
        if self.remainder == "pad":
            longest = self.shard_size(0)
            full, rest = divmod(longest, self.batch_size)
            return full * self.batch_size + math.ceil(rest / self.replica_multiple) * (
                self.replica_multiple
            )
        shortest = self.shard_size(self.shard_count - 1)
        full, rest = divmod(shortest, self.batch_size)
        return full * self.batch_size + (rest // self.replica_multiple) * self.replica_multiple

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Dataset positions in the order this shard serves them in `epoch`."""
        return _epoch_order(self, epoch)


@functools.lru_cache(maxsize=4)
def _epoch_order(plan: BatchPlan, epoch: int) -> np.ndarray:
    members = plan.members
    if plan.shuffle:
        rng = np.random.default_rng([plan.seed, _EPOCH_SALT, epoch, plan.shard_index])
        members = rng.permutation(members)
    # np.resize repeats from the start: `pad` re-serves the first samples of the epoch.
    order = np.resize(members, plan.samples_per_epoch)
    order.flags.writeable = False
    return order
