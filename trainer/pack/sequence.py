"""`PackedSequence`: the ImageSequence over a packed dataset (tar shards and index.json).

    packed = open_packed("gs://b/packed", storage)
    seq = PackedSequence(train_index, packed=packed, positions=train_positions,
                         shard_cache=cache,
                         batch_size=64, image_size=(224, 224), storage=storage)

Everything but where bytes come from is ImageSequence's: batches, look-ahead, decode slots,
the corrupt-sample policy and its quarantine. The order is `ShardPlan`'s (whole shards per
worker, shuffled in blocks); each sample is one `pread` from a local shard, checked against
its crc32c; the shards the next samples need are downloaded ahead.
"""

from __future__ import annotations

import os
from typing import Any

import google_crc32c
import numpy as np

from trainer.data.decode import ImageDecodeError
from trainer.data.index import DatasetIndex
from trainer.data.sequence import ImageSequence
from trainer.pack.format import PackedIndex
from trainer.pack.plan import ShardPlan
from trainer.pack.shards import ShardCache, read_range


class PackedSequence(ImageSequence):
    """Batches of a packed dataset; `index` is the split's DatasetIndex (names for reports)."""

    def __init__(
        self,
        index: DatasetIndex,
        *,
        packed: PackedIndex,
        positions: np.ndarray,
        shard_cache: ShardCache,
        block_shards: int = 4,
        prefetch_shards: int = 4,
        fetch_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.packed = packed
        self._where = np.asarray(positions, np.int64)  # split position → packed position
        self._block_shards = block_shards
        self.prefetch_shards = prefetch_shards
        self.shard_cache = shard_cache
        # Reads are local pread()s, so a couple of threads per core keep the decoders busy.
        threads = fetch_threads or 2 * (os.cpu_count() or 1)
        super().__init__(index, fetch_threads=threads, **kwargs)

    def _make_plan(self, **options: Any) -> ShardPlan:
        shard_of = self.packed.sample_shard[self._where]
        order = np.argsort(shard_of, kind="stable")  # positions grouped by shard, in shard order
        counts = np.bincount(shard_of, minlength=len(self.packed.shards))
        members = tuple(np.split(order, np.cumsum(counts)[:-1]))
        return ShardPlan(
            shard_members=members,
            batch_size=options["batch_size"],
            replica_multiple=options["replica_multiple"],
            worker_index=options["shard_index"],
            worker_count=options["shard_count"],
            seed=options["seed"],
            remainder=options["remainder"],
            shuffle=options["shuffle"],
            block_shards=self._block_shards,
        )

    def _read(self, position: int, uri: str) -> bytes:
        p = int(self._where[position])
        shard_uri = self.packed.shard_uri(int(self.packed.sample_shard[p]))
        with self.shard_cache.opened(shard_uri) as path:
            data = read_range(path, int(self.packed.offset[p]), int(self.packed.size[p]))
        self.counters.add("samples_read")
        if google_crc32c.value(data) != int(self.packed.crc32c[p]):
            raise ImageDecodeError(
                "corrupt", f"crc32c mismatch: the bytes in {shard_uri} differ from the index"
            )
        return data

    def _submit(self, epoch: int, index: int) -> Any:
        self._prefetch_shards(epoch, index)
        return super()._submit(epoch, index)

    def _prefetch_shards(self, epoch: int, index: int) -> None:
        """Start downloading the next `prefetch_shards` shards after this batch's first."""
        start, _ = self.plan.batch_bounds(index)
        order = self.plan.shard_order(epoch)
        first = int(self.packed.sample_shard[self._where[self.plan.epoch_order(epoch)[start]]])
        # Within a block the samples are mixed: the whole block (and the next) is wanted.
        at = order.index(first) if first in order else 0
        block = at - at % self._block_shards
        ahead = order[block : block + self._block_shards + self.prefetch_shards]
        if epoch + 1 != self.epochs and len(ahead) < self._block_shards + self.prefetch_shards:
            ahead += self.plan.shard_order(epoch + 1)[: self.prefetch_shards]
        for shard in ahead:
            self.shard_cache.prefetch(self.packed.shard_uri(shard))

    def close(self) -> None:
        super().close()
