"""ImageSequence over the GCS emulator: exact epochs, sharding, remainders, faults, cache."""

import hashlib
import json

import numpy as np
import pytest

from trainer.data.cache import ByteCache
from trainer.data.counters import Counters
from trainer.data.decode import decode_image
from trainer.data.index import discover
from trainer.data.sequence import ImageSequence
from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.errors import DataError

SIZE = (24, 24)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqdata")
    write_learnable_dataset(str(root), classes=3, per_class=9, min_size=20, max_size=64, seed=2)
    return root


@pytest.fixture
def gcs_index(folder, gcs_bucket, gcs_upload_tree):
    gcs_upload_tree(str(folder), f"gs://{gcs_bucket}/d")
    return discover(f"gs://{gcs_bucket}/d", storage=Storage())


def digest(row):
    return hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest()


def identify(index, storage):
    """Maps the decoded pixels of each object to its URI, to read back what a batch held."""
    table = {}
    for uri in index.uris:
        table[digest(decode_image(storage.read(uri), size=SIZE))] = uri
    assert len(table) == len(index), "test images must decode to distinct pixels"
    return table


def served(seq, table, epoch):
    uris, labels = [], []
    for i in range(len(seq)):
        x, y = seq.get_batch(epoch=epoch, index=i)
        assert x.shape == (len(y), *SIZE, 3) and x.dtype == np.uint8 and y.dtype == np.int32
        uris += [table[digest(row)] for row in x]
        labels += y.tolist()
    return uris, labels


def test_each_sample_once_per_epoch_with_its_label_and_seeded_order(gcs_index):
    storage = Storage()
    table = identify(gcs_index, storage)
    label_of = dict(zip(gcs_index.uris, gcs_index.labels, strict=True))
    seq = ImageSequence(
        gcs_index,
        batch_size=4,
        image_size=SIZE,
        storage=storage,
        seed=5,
        remainder="drop",
        replica_multiple=1,
    )
    e0, y0 = served(seq, table, 0)
    e1, _ = served(seq, table, 1)
    assert sorted(e0) == sorted(gcs_index.uris) == sorted(e1)  # 27 = 6*4 + 3 kept
    assert e0 != e1, "a new epoch reshuffles"
    assert y0 == [label_of[u] for u in e0]
    again = ImageSequence(
        gcs_index, batch_size=4, image_size=SIZE, storage=storage, seed=5, remainder="drop"
    )
    assert served(again, table, 1)[0] == e1, "order is a function of (seed, epoch)"
    other = ImageSequence(gcs_index, batch_size=4, image_size=SIZE, storage=storage, seed=6)
    assert served(other, table, 1)[0] != e1
    for s in (seq, again, other):
        s.close()


@pytest.mark.parametrize(
    ("remainder", "replicas"), [("pad", 2), ("pad", 4), ("drop", 2), ("drop", 4)]
)
def test_remainder_policies_keep_batches_a_multiple_of_the_replicas(gcs_index, remainder, replicas):
    storage = Storage()
    table = identify(gcs_index, storage)
    with ImageSequence(
        gcs_index,
        batch_size=8,
        image_size=SIZE,
        storage=storage,
        remainder=remainder,
        replica_multiple=replicas,
    ) as seq:
        uris, _ = served(seq, table, 0)
        sizes = [len(seq[i][1]) for i in range(len(seq))]
    assert all(s % replicas == 0 for s in sizes)
    if remainder == "pad":
        assert set(uris) == set(gcs_index.uris)
        assert len(uris) - len(gcs_index) < replicas  # the fewest repeats
    else:
        assert len(set(uris)) == len(uris)
        assert len(gcs_index) - len(uris) < replicas


def test_shards_read_only_their_objects_disjoint_and_complete(gcs_index):
    storage = Storage()
    table = identify(gcs_index, storage)
    seen = []
    for shard in range(2):
        counters = Counters()
        with ImageSequence(
            gcs_index,
            batch_size=4,
            image_size=SIZE,
            storage=Storage(counters=counters),
            shard_index=shard,
            shard_count=2,
            remainder="pad",
            prefetch_batches=0,
        ) as seq:
            uris, _ = served(seq, table, 0)
            steps = len(seq)
        seen.append(set(uris))
        # Only this shard's objects were fetched (14 or 13 of 27), nothing of the other half.
        assert counters.get("objects_fetched") == len(uris)
        assert len(set(uris)) in (13, 14)
        assert steps == 4
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(gcs_index.uris)


def test_corrupt_objects_skip_with_report_or_fail(folder, gcs_bucket, gcs_upload_tree, tmp_path):
    gcs_upload_tree(str(folder), f"gs://{gcs_bucket}/c")
    storage = Storage()
    bad = [f"gs://{gcs_bucket}/c/circle/broken.jpg", f"gs://{gcs_bucket}/c/square/page.jpg"]
    storage.write(bad[0], sorted(folder.glob("circle/*.jpg"))[0].read_bytes()[:200])
    storage.write(bad[1], b"<html><body>503 Service Unavailable</body></html>")
    index = discover(f"gs://{gcs_bucket}/c", storage=storage)
    report = str(tmp_path / "quarantine.jsonl")
    counters = Counters()

    def epoch(seed):
        seq = ImageSequence(
            index,
            batch_size=5,
            image_size=SIZE,
            storage=storage,
            seed=seed,
            counters=counters,
            quarantine_uri=report,
            remainder="drop",
        )
        with seq:
            batches = [seq[i] for i in range(len(seq))]
        return seq, batches

    _, batches = epoch(1)
    assert sum(len(y) for _, y in batches) == 29  # epoch length kept: 27 good + 2 bad
    with open(report) as f:
        lines = [json.loads(line) for line in f]
    assert sorted(r["uri"] for r in lines) == sorted(bad)
    assert {r["reason"] for r in lines} <= {"truncated", "not_an_image", "corrupt"}
    assert counters.get("skipped") == 2
    _, again = epoch(1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again, strict=True)), (
        "replacement is deterministic"
    )

    strict = ImageSequence(
        index, batch_size=29, image_size=SIZE, storage=storage, on_corrupt="fail", remainder="drop"
    )
    with pytest.raises(DataError, match=r"gs://.*/c/(circle/broken|square/page)\.jpg: unreadable"):
        strict[0]
    strict.close()


def test_transient_faults_are_retried_and_quarantine_nothing(gcs_index, fault_proxy):
    # Every kind, 20 % of reads in all: each fault costs a backoff sleep (0.2 s and up).
    proxy = fault_proxy(
        status_503=0.05,
        status_429=0.05,
        reset=0.05,
        truncate=0.05,
        only_paths="alt=media",
        seed=3,
        set_env=True,
    )
    counters = Counters()
    storage = Storage(counters=counters, deadline_s=30)
    reference = Storage()
    with ImageSequence(
        gcs_index, batch_size=9, image_size=SIZE, storage=storage, counters=counters, shuffle=False
    ) as seq:
        got = np.concatenate([seq[i][0] for i in range(len(seq))])
    expected = np.stack([decode_image(reference.read(u), size=SIZE) for u in gcs_index.uris])
    assert np.array_equal(got, expected)
    assert seq.quarantined == []
    assert counters.get("skipped") == 0
    assert counters.get("retries") > 0
    stats = proxy.stats()
    assert all(stats[k] > 0 for k in ("status_503", "status_429", "reset", "truncate")), stats


def test_cache_serves_the_second_epoch_without_gcs_reads(gcs_index, tmp_path):
    counters = Counters()
    cache = ByteCache(str(tmp_path / "cache"), max_bytes=64 << 20)
    with ImageSequence(
        gcs_index,
        batch_size=9,
        image_size=SIZE,
        cache=cache,
        counters=counters,
        storage=Storage(counters=counters),
        prefetch_batches=0,
    ) as seq:
        for i in range(len(seq)):
            seq[i]
        assert counters.get("objects_fetched") == len(gcs_index)
        seq.on_epoch_end()
        for i in range(len(seq)):
            seq[i]
    assert counters.get("objects_fetched") == len(gcs_index), "epoch 2 read nothing from GCS"
    assert counters.get("cache_hits") == len(gcs_index)


def test_float32_output_and_counters(gcs_index):
    counters = Counters()
    with ImageSequence(
        gcs_index,
        batch_size=9,
        image_size=SIZE,
        dtype="float32",
        counters=counters,
        storage=Storage(counters=counters),
    ) as seq:
        x, _ = seq[0]
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    snap = counters.snapshot()
    for key in (
        "objects_fetched",
        "bytes_fetched",
        "fetch_seconds",
        "decode_seconds",
        "wait_seconds",
    ):
        assert snap[key] > 0, key


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_resize_mode_reaches_the_decoder(folder, resize):
    index = discover(str(folder), storage=Storage())
    with ImageSequence(
        index, batch_size=27, image_size=(16, 32), shuffle=False, resize=resize
    ) as seq:
        x, _ = seq[0]
    storage = Storage()
    expected = [decode_image(storage.read(u), size=(16, 32), resize=resize) for u in index.uris]
    squashed = [decode_image(storage.read(u), size=(16, 32)) for u in index.uris]
    assert np.array_equal(x, np.stack(expected))
    assert not np.array_equal(x, np.stack(squashed)), "the mode changed the pixels"
    with pytest.raises(ValueError, match="resize"):
        ImageSequence(index, batch_size=3, image_size=SIZE, resize="stretch")


def test_batches_are_aligned_reused_and_never_overwritten_while_held(folder):
    from trainer.data.batch_buffers import is_aligned

    index = discover(str(folder), storage=Storage())
    table = identify(index, Storage())
    with ImageSequence(index, batch_size=4, image_size=SIZE, prefetch_batches=2, epochs=4) as seq:
        held = [seq.get_batch(epoch=0, index=i) for i in range(len(seq))]  # kept: never reused
        before = [[table[digest(row)] for row in x] for x, _ in held]
        for epoch in range(1, 4):
            for i in range(len(seq)):
                x, _ = seq.get_batch(epoch=epoch, index=i)
                assert is_aligned(x)
        assert [[table[digest(row)] for row in x] for x, _ in held] == before
        # Epochs 1-3 ran on released buffers: the look-ahead, the batch in hand and a few more.
        assert seq._buffers.allocated < len(seq) + 3 * len(seq) // 2
