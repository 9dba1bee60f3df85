"""`PackedSequence`: the ImageSequence over a packed dataset (tar shards and index.json).

    packed = open_packed("gs://b/packed", storage)
    split = PackedSplit.of(packed, train_positions, cache)
    seq = PackedSequence(split, batch_size=64, image_size=(224, 224), storage=storage)

Everything but where bytes come from is ImageSequence's: batches, look-ahead, decode slots,
the corrupt-sample policy and its quarantine. The order is `ShardPlan`'s (whole shards per
worker, shuffled in blocks); each sample is one `pread` from a local shard, checked against
its crc32c; the shards the next samples need are downloaded ahead. With decode processes, a
thread hands a whole chunk of file ranges to one process, which reads, checks and decodes them:
no Python per image in the trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import numpy as np

from trainer.data.decode_pool import FileRange
from trainer.data.index import DatasetIndex
from trainer.data.ranges import read_checked
from trainer.data.sequence import ImageSequence
from trainer.errors import StorageNotFoundError
from trainer.pack.format import PackedIndex
from trainer.pack.plan import ShardPlan
from trainer.pack.shards import ShardCache


@dataclasses.dataclass(frozen=True, eq=False)
class PackedSplit(DatasetIndex):
    """A split of a packed dataset: a DatasetIndex (names `shard.tar#key`) that reads its samples.

    `read_sample` is what any ImageSequence over it uses instead of fetching by name, so code
    that builds a plain ImageSequence from a split (the exported model's evaluation) works too.
    """

    packed: PackedIndex | None = None
    positions: np.ndarray | None = None  # split position → packed position
    shard_cache: ShardCache | None = None

    @classmethod
    def of(cls, packed: PackedIndex, positions: np.ndarray, cache: ShardCache, source: str = ""):
        """The samples of `packed` at `positions`, read through `cache`."""
        positions = np.asarray(positions, np.int64)
        shards, keys = packed.sample_shard[positions], [packed.keys[p] for p in positions]
        return cls(
            uris=tuple(
                f"{packed.shard_uri(int(s))}#{k}" for s, k in zip(shards, keys, strict=True)
            ),
            labels=tuple(packed.labels[positions].tolist()),
            class_names=packed.class_names,
            source=source,
            packed=packed,
            positions=positions,
            shard_cache=cache,
        )

    def read_sample(self, position: int) -> bytes:
        """The bytes of sample `position`, checked against the index's size and crc32c."""
        packed, p = self.packed, int(self.positions[position])
        shard_uri = packed.shard_uri(int(packed.sample_shard[p]))
        where, size, crc = int(packed.offset[p]), int(packed.size[p]), int(packed.crc32c[p])
        with self.shard_cache.opened(shard_uri, upto=where + size) as path:
            try:
                return read_checked(path, where, size, crc, name=shard_uri)
            except FileNotFoundError:
                # A local shard gone: quarantined like a gs:// one (--on-corrupt decides).
                raise StorageNotFoundError(f"{shard_uri}: no such file or directory") from None


class PackedSequence(ImageSequence):
    """Batches of a packed split in ShardPlan order, shards downloaded ahead of use."""

    def __init__(
        self,
        index: PackedSplit,
        *,
        block_shards: int = 4,
        prefetch_shards: int = 4,
        fetch_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.packed = index.packed
        self._where = index.positions
        self._block_shards = block_shards
        self.prefetch_shards = prefetch_shards
        self.shard_cache = index.shard_cache
        # Reads are local pread()s, so a couple of threads per core keep the decoders busy.
        threads = fetch_threads or 2 * (os.cpu_count() or 1)
        super().__init__(index, fetch_threads=threads, **kwargs)

    def _make_plan(self, **options: Any) -> ShardPlan:
        shard_of = self.packed.sample_shard[self._where]
        order = np.lexsort((self.packed.offset[self._where], shard_of))  # by shard, then offset
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

    def _submit(self, epoch: int, index: int) -> Any:
        self.download_ahead(epoch=epoch, index=index)
        return super()._submit(epoch, index)

    def _chunked(self) -> bool:
        return self.decoders is not None

    def _file_ranges(
        self, positions: np.ndarray, pins: contextlib.ExitStack
    ) -> list[FileRange | Exception]:
        """Where each sample lies in its shard, the shards pinned in the cache for `pins`
        (those still downloading once they hold these samples)."""
        packed, where = self.packed, self._where[positions]
        shards = packed.sample_shard[where].tolist()
        offsets, sizes = packed.offset[where].tolist(), packed.size[where].tolist()
        ends: dict[int, int] = {}
        for shard, o, n in zip(shards, offsets, sizes, strict=True):
            ends[shard] = max(ends.get(shard, 0), o + n)
        paths: dict[int, str | Exception] = {}
        for shard, end in ends.items():
            uri = packed.shard_uri(shard)
            try:
                paths[shard] = pins.enter_context(self.shard_cache.opened(uri, upto=end))
            except StorageNotFoundError as e:
                paths[shard] = e
        crcs = packed.crc32c[where].tolist()
        return [
            path if isinstance(path := paths[shard], Exception) else FileRange(path, o, n, c)
            for shard, o, n, c in zip(shards, offsets, sizes, crcs, strict=True)
        ]

    def download_ahead(self, *, epoch: int, index: int) -> None:
        """Start downloading batch `index`'s block of shards and the next `prefetch_shards`
        (the trainer calls it for the first batch while the model is built)."""
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
