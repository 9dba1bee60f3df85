"""The run's data: the dataset index, its split, and the two ImageSequences sized to the strategy.

data = load_data(config, storage)                       # before TensorFlow starts
inputs = build_inputs(config, data, setup, storage=storage, counters=counters,
                      quarantine_uri=outputs.uri("quarantine/worker-0.jsonl"))
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Any

import numpy as np

from trainer.config.validate import class_names
from trainer.data.cache import ByteCache
from trainer.data.counters import Counters
from trainer.data.index import DatasetIndex, load_or_discover
from trainer.data.quarantine import Quarantine
from trainer.data.storage import Storage
from trainer.distribute.strategy import StrategySetup
from trainer.errors import ConfigError, DataError
from trainer.pack.format import PackedIndex, open_packed

logger = logging.getLogger(__name__)

# The shard cache of a packed gs:// dataset when --cache-size-mb does not size it.
DEFAULT_SHARD_CACHE_MB = 20 << 10


@dataclasses.dataclass(frozen=True)
class Data:
    index: DatasetIndex
    train: DatasetIndex
    val: DatasetIndex
    packed: PackedIndex | None = None  # a packed dataset; train and val are PackedSplits


@dataclasses.dataclass
class Inputs:
    data: Data
    train_seq: Any  # ImageSequence
    val_seq: Any | None  # None when there are fewer validation objects than workers
    per_replica: int
    local_batch: int
    shard_cache: Any = None  # ShardCache of a packed dataset
    decoders: Any = None  # DecodePool that both Sequences share (--decode-processes)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_seq)

    @property
    def quarantined(self) -> list[dict[str, str]]:
        """Every object this worker skipped, training's and validation's, once."""
        return self.train_seq.quarantined  # the Sequences share one Quarantine

    def close(self) -> None:
        for seq in (self.train_seq, self.val_seq):
            if seq is not None:
                seq.close()
        if self.shard_cache is not None:
            self.shard_cache.close()
        if self.decoders is not None:
            self.decoders.close()


def load_data(config: Any, storage: Storage) -> Data:
    """The index (listed, or read from --index) and its seeded train/validation split.

    A packed dataset (index.json under --data) is recognised by one read and lists nothing.
    """
    packed = open_packed(config.data, storage)
    if packed is not None:
        data = _packed_data(config, packed, storage)
    else:
        index = load_or_discover(
            config.data,
            storage=storage,
            index_uri=config.index,
            class_names=list(class_names(config.classes, "--classes")) if config.classes else None,
        )
        train, val = index.split(val_split=config.val_split, seed=config.seed)
        data = Data(index=index, train=train, val=val)
    if config.min_val_accuracy is not None and not len(data.val):
        # Judged on nothing, the gate would fail after the whole run with accuracy nan.
        raise ConfigError(
            f"--min-val-accuracy (TRAINER_MIN_VAL_ACCURACY) needs a validation set, but "
            f"--val-split (TRAINER_VAL_SPLIT) {config.val_split} of {len(data.index)} objects "
            "leaves none; raise --val-split or drop the quality gate"
        )
    return data


def _packed_data(config: Any, packed: PackedIndex, storage: Storage) -> Data:
    from trainer.pack.sequence import PackedSplit
    from trainer.pack.shards import ShardCache
    from trainer.pack.sizing import size_advice

    if config.index:
        raise ConfigError(
            f"--index (TRAINER_INDEX) {config.index}: --data {config.data} is packed, and its "
            "index.json already lists every sample; drop --index"
        )
    if config.classes:
        packed = packed.select_classes(class_names(config.classes, "--classes"))
    logger.info(
        "--data %s is packed: %d samples in %d shards (%s)",
        config.data,
        len(packed),
        len(packed.shards),
        ", ".join(
            f"{k} {packed.settings[k]}"
            for k in ("max_side", "short_side", "raw_max_pixels")
            if packed.settings.get(k)
        )
        or "original sizes",
    )
    advice = size_advice(packed.settings, image_size=tuple(config.image_size))
    if advice:
        logger.warning("--data %s: %s", config.data, advice)

    cache_dir = config.cache_dir or os.path.join(tempfile.gettempdir(), "streamtrain-cache")
    cache = ShardCache(
        cache_dir,
        max_bytes=(config.cache_size_mb or DEFAULT_SHARD_CACHE_MB) << 20,
        storage=storage,
    )
    names = DatasetIndex(
        uris=tuple(
            f"{packed.shards[s]}#{k}" for s, k in zip(packed.sample_shard, packed.keys, strict=True)
        ),
        labels=tuple(packed.labels.tolist()),
        class_names=packed.class_names,
        source=config.data,
    )
    train, val = names.split_positions(val_split=config.val_split, seed=config.seed)
    everything = PackedSplit.of(packed, np.arange(len(packed)), cache, source=config.data)
    return Data(
        everything,
        PackedSplit.of(packed, train, cache, source=config.data),
        PackedSplit.of(packed, val, cache, source=config.data),
        packed,
    )


def build_inputs(
    config: Any,
    data: Data,
    setup: StrategySetup,
    *,
    storage: Storage,
    counters: Counters,
    quarantine_uri: str,
) -> Inputs:
    """This worker's training and validation Sequences; batches are replica multiples."""
    from trainer.data.sequence import ImageSequence

    if config.batch_size % setup.replicas:
        raise ConfigError(
            f"--batch-size (TRAINER_BATCH_SIZE) {config.batch_size} is not a "
            f"multiple of the {setup.replicas} replicas; use a multiple"
        )
    per_replica = config.batch_size // setup.replicas
    local_batch = per_replica * setup.local_replicas
    cluster = setup.cluster
    cache = None
    if config.cache_dir and config.cache_size_mb > 0:
        cache = ByteCache(config.cache_dir, max_bytes=config.cache_size_mb << 20)
    from trainer.data.decode_pool import DecodePool, available_cpus

    decoders = None
    processes = config.decode_processes
    if processes is None:
        processes = available_cpus()
    if processes:
        logger.info("decoding in %d decode processes (--decode-processes)", processes)
        decoders = DecodePool(
            processes,
            size=tuple(config.image_size),
            dtype=config.dtype,
            resize=config.resize,
            counters=counters,
        )
    common = dict(
        decoders=decoders,
        image_size=tuple(config.image_size),
        resize=config.resize,
        storage=storage,
        dtype=config.dtype,
        replica_multiple=setup.local_replicas,
        seed=config.seed,
        on_corrupt=config.on_corrupt,
        fetch_threads=config.fetch_threads,
        decode_threads=config.decode_threads,
        prefetch_batches=config.prefetch_batches,
        cache=cache,
        counters=counters,
        quarantine=Quarantine(
            config.on_corrupt, storage=storage, counters=counters, report_uri=quarantine_uri
        ),
        shard_index=cluster.task_index,
        shard_count=cluster.num_workers,
    )
    sequence, shard_cache = ImageSequence, None
    if data.packed is not None:
        from trainer.pack.sequence import PackedSequence

        common["cache"] = None  # the shard cache replaces the per-object one
        shard_cache = data.train.shard_cache
        shard_cache.counters = counters  # the run's counters, made after the data was loaded
        sequence = PackedSequence
    try:
        train_seq = sequence(
            data.train,
            batch_size=local_batch,
            remainder=config.remainder,
            shuffle=True,
            epochs=config.epochs,
            max_batches=config.max_steps_per_epoch,
            **common,
        )
        val_seq = None
        if len(data.val) >= cluster.num_workers:
            # Validation pads (weight 0) instead of dropping: every object is scored once.
            val_seq = sequence(
                data.val,
                batch_size=local_batch,
                remainder="pad",
                shuffle=False,
                epochs=1,
                urgent=True,
                **common,
            )
    except ValueError as e:
        if decoders is not None:
            decoders.close()
        raise DataError(f"--data {config.data}: {e}") from None
    if data.packed is not None:
        train_seq.download_ahead(epoch=0, index=0)  # the first block, while the model builds
    return Inputs(data, train_seq, val_seq, per_replica, local_batch, shard_cache, decoders)
