"""trainer pack → shards + index → PackedSequence, against the GCS emulator: both input layouts,
standard-tar readability, resume, parts, re-encoding, quarantine, exact order, worker
disjointness, corrupt and crc-mismatched samples, and a shard cache that makes epoch 2 free."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from trainer.data.counters import Counters
from trainer.data.decode import decode_image
from trainer.data.decode_pool import DecodePool
from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.errors import ConfigError, DataError
from trainer.pack.format import open_packed
from trainer.pack.sequence import PackedSequence, PackedSplit
from trainer.pack.shards import ShardCache
from trainer.pack.writer import PackConfig, pack

SIZE = (16, 16)
# 36 small images of 3-6 KB make about 5 shards of 40 KB.
SHARD_MB = 40 / 1024


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("packsrc")
    write_learnable_dataset(str(root), classes=3, per_class=12, min_size=40, max_size=96, seed=4)
    return root


@pytest.fixture
def packed_gcs(folder, gcs_bucket, gcs_upload_tree):
    gcs_upload_tree(str(folder), f"gs://{gcs_bucket}/raw")
    out = f"gs://{gcs_bucket}/packed"
    pack(PackConfig(source=f"gs://{gcs_bucket}/raw", output=out, shard_size_mb=SHARD_MB), Storage())
    return out


def digest(row: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest()


def test_gcs_class_folders_pack_into_standard_tars_with_an_exact_index(folder, packed_gcs):
    storage = Storage()
    packed = open_packed(packed_gcs, storage)
    assert packed.class_names == tuple(sorted(p.name for p in folder.iterdir()))
    assert len(packed) == 36 and len(packed.shards) >= 4
    assert storage.exists(f"{packed_gcs}/_SUCCESS")
    originals = {p.name: p.read_bytes() for p in folder.rglob("*.*")}
    seen = 0
    for shard, members in enumerate(packed.shard_members()):
        data = storage.read(packed.shard_uri(shard))
        # Python's tarfile, a standard reader, sees {key}.jpg and {key}.cls pairs.
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for p in members:
            payload = data[packed.offset[p] : packed.offset[p] + packed.size[p]]
            ext = packed.sources[p].rsplit(".", 1)[-1]
            assert packed.exts[p] == ext
            assert files[f"{packed.keys[p]}.{ext}"] == payload
            assert files[f"{packed.keys[p]}.cls"] == str(packed.labels[p]).encode()
            # --max-side 0 keeps the bytes: they are the original file's.
            assert payload == originals[packed.sources[p].rsplit("/", 1)[-1]]
            assert packed.class_names[packed.labels[p]] == packed.sources[p].split("/")[-2]
            seen += 1
    assert seen == 36


def test_samples_are_shuffled_into_shards_by_seed_unless_the_order_is_kept(folder, tmp_path):
    def packed(name: str, **options) -> tuple[tuple[str, ...], list[int]]:
        cfg = PackConfig(source=str(folder), output=str(tmp_path / name), shard_size_mb=SHARD_MB)
        pack(dataclasses.replace(cfg, **options), Storage())
        index = open_packed(str(tmp_path / name), Storage())
        mixed = [len(set(index.labels[m].tolist())) for m in index.shard_members()]
        return index.keys, mixed

    kept, kept_mixed = packed("kept", keep_order=True)
    assert list(kept) == sorted(kept)  # keys are discovered positions: class folder order
    shuffled, mixed = packed("seed0")
    assert sorted(shuffled) == list(kept) and list(shuffled) != list(kept)
    assert packed("seed0-again")[0] == shuffled  # a pure function of the seed
    assert packed("seed1", seed=1)[0] != shuffled
    # 3 classes of 12 in shards of a few samples: in folder order most shards hold one class.
    assert sum(mixed) / len(mixed) > sum(kept_mixed) / len(kept_mixed)


def test_manifest_pack_reencodes_large_images_and_quarantines_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, (w, h) in enumerate([(120, 60), (30, 20), (80, 160), (24, 24)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        rows.append(f"{path.name},{'ab'[i % 2]}")
    (tmp_path / "bad.jpg").write_bytes(b"<html>503</html>")
    rows.append("bad.jpg,a")
    (tmp_path / "m.csv").write_text("uri,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    summary = pack(
        PackConfig(source=str(tmp_path / "m.csv"), output=str(out), max_side=40, quality=95),
        Storage(),
    )
    assert summary.merged and summary.samples == 4 and summary.quarantined == 1
    packed = open_packed(str(out), Storage())
    shapes, sampling = {}, set()
    for p in range(len(packed)):
        data = (out / packed.shards[packed.sample_shard[p]]).read_bytes()
        payload = data[packed.offset[p] : packed.offset[p] + packed.size[p]]
        img = Image.open(io.BytesIO(payload))
        shapes[packed.sources[p].rsplit("/", 1)[-1]] = (img.format, img.size)
        if img.format == "JPEG":
            sampling.add(JpegImagePlugin.get_sampling(img))
    # Over 40 px: re-encoded as JPEG, aspect kept; the others kept as the original PNG.
    assert shapes == {
        "img0.png": ("JPEG", (40, 20)),
        "img1.png": ("PNG", (30, 20)),
        "img2.png": ("JPEG", (20, 40)),
        "img3.png": ("PNG", (24, 24)),
    }
    assert sampling == {2}, "re-encoded with 4:2:0 chroma (simplejpeg's own default is 4:4:4)"
    report = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [r["uri"].rsplit("/", 1)[-1] for r in report] == ["bad.jpg"]
    assert report[0]["reason"] == "not_an_image"


def test_rerun_resumes_after_the_last_complete_shard_and_parts_merge(folder, tmp_path):
    out = tmp_path / "out"
    cfg = PackConfig(source=str(folder), output=str(out), shard_size_mb=SHARD_MB)
    first = pack(cfg, Storage())
    index_before = (out / "index.json").read_text()
    n = first.shards_written
    assert n >= 4
    # A job killed while writing its last shard: no sidecar, no part marker, no index.
    last = sorted(out.glob("shard-*.json"))[-1]
    for name in (last.name, "index.json", "_SUCCESS", "parts/00000.done"):
        (out / name).unlink()
    again = pack(cfg, Storage())
    assert (again.shards_written, again.shards_skipped) == (1, n - 1)
    assert (out / "index.json").read_text() == index_before
    assert pack(cfg, Storage()).shards_written == 0  # complete: nothing to do

    parted = tmp_path / "parted"
    halves = [PackConfig(source=str(folder), output=str(parted), parts=2, part=p) for p in (1, 0)]
    assert not pack(halves[0], Storage()).merged  # part 0 is not done yet
    assert not (parted / "index.json").exists()
    assert pack(halves[1], Storage()).merged
    packed = open_packed(str(parted), Storage())
    assert sorted(packed.keys) == sorted(open_packed(str(out), Storage()).keys)
    assert {s.split("-")[1] for s in packed.shards} == {"00000", "00001"}


def test_pack_cli_exit_codes(folder, tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "trainer", "pack", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    bad = cli("--source", str(folder), "--output", str(tmp_path / "o"), "--quality", "101")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--quality" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("--source", str(tmp_path / "nope"), "--output", str(tmp_path / "o"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    ok = cli("--source", str(folder), "--output", str(tmp_path / "o"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "_SUCCESS").exists()


def _sequence(packed, tmp_path, *, counters=None, worker=0, workers=1, **kw):
    counters = counters or Counters()
    storage = Storage(counters=counters)
    cache = ShardCache(
        str(tmp_path / f"cache{worker}"), max_bytes=1 << 30, storage=storage, counters=counters
    )
    split = PackedSplit.of(packed, np.arange(len(packed)), cache)
    options = dict(batch_size=4, image_size=SIZE, seed=3, remainder="pad", storage=storage)
    return PackedSequence(
        split, counters=counters, shard_index=worker, shard_count=workers, block_shards=2,
        **{**options, **kw},
    )  # fmt: skip


def _table(packed, storage):
    table = {}
    for p in range(len(packed)):
        data = storage.read(packed.shard_uri(int(packed.sample_shard[p])))
        payload = data[packed.offset[p] : packed.offset[p] + packed.size[p]]
        table[digest(decode_image(payload, size=SIZE))] = p
    assert len(table) == len(packed)
    return table


def _wait_downloaded(seq, packed, shards):
    """Samples are read while their shards still download: wait for the tars' last bytes."""
    for shard in shards:
        with seq.shard_cache.opened(packed.shard_uri(shard)):
            pass


def _epoch(seq, table, epoch):
    got = []
    for i in range(len(seq)):
        x, y = seq.get_batch(epoch=epoch, index=i)
        got += [(table[digest(row)], int(label)) for row, label in zip(x, y, strict=True)]
    return got


@pytest.fixture(params=[0, 2], ids=["threads", "2-processes"])
def decoders(request):
    """None (decode on threads) or a DecodePool of 2 processes reading the shards themselves."""
    if not request.param:
        yield None
        return
    with DecodePool(request.param, size=SIZE, rows=3) as pool:
        yield pool


def test_each_sample_once_per_epoch_in_blocks_resumable_and_cached(
    packed_gcs, tmp_path, fault_proxy, decoders
):
    packed = open_packed(packed_gcs, Storage())
    table = _table(packed, Storage())
    proxy = fault_proxy(set_env=True)  # counts the requests the sequence makes
    counters = Counters()
    seq = _sequence(
        packed, tmp_path, counters=counters, remainder="drop", batch_size=6, decoders=decoders
    )
    e0 = _epoch(seq, table, 0)
    _wait_downloaded(seq, packed, range(len(packed.shards)))
    requests_epoch0 = proxy.stats()["requests"]
    assert sorted(p for p, _ in e0) == list(range(36))
    assert all(packed.labels[p] == y for p, y in e0)
    # Blocks of 2 shards: the first 2 shards' samples come before any other shard's.
    shard_of = [int(packed.sample_shard[p]) for p, _ in e0]
    first_block = set(seq.plan.shard_order(0)[:2])
    n_first = sum(len(packed.shard_members()[s]) for s in first_block)
    assert set(shard_of[:n_first]) == first_block
    assert counters.get("shard_downloads") == len(packed.shards)
    # Requests: one GET per shard, not one per image (nor a metadata GET before each).
    assert requests_epoch0 == len(packed.shards), proxy.recent_requests()
    e1 = _epoch(seq, table, 1)
    assert proxy.stats()["requests"] == requests_epoch0, "epoch 2 made no GCS request"
    assert counters.get("shard_cache_hits") > 0 and sorted(p for p, _ in e1) == list(range(36))
    assert e0 != e1
    seq.close()
    seq.shard_cache.close()
    # A restarted job (fresh process state, same seed) resumes mid-epoch exactly.
    again = _sequence(packed, tmp_path / "b", remainder="drop", batch_size=6, decoders=decoders)
    x, _ = again.get_batch(epoch=1, index=3)
    assert [table[digest(r)] for r in x] == [p for p, _ in e1[18:24]]
    again.close()


def test_two_workers_read_disjoint_shards_with_equal_steps(packed_gcs, tmp_path):
    packed = open_packed(packed_gcs, Storage())
    table = _table(packed, Storage())
    seen, steps = [], []
    for worker in range(2):
        counters = Counters()
        seq = _sequence(packed, tmp_path, counters=counters, worker=worker, workers=2)
        samples = {p for p, _ in _epoch(seq, table, 0)}
        steps.append(len(seq))
        seen.append(samples)
        shards = {int(packed.sample_shard[p]) for p in samples}
        _wait_downloaded(seq, packed, shards)
        assert counters.get("shard_downloads") == len(shards) == len(seq.plan.shards)
        seq.close()
    assert steps[0] == steps[1]
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(36))


def test_corrupt_and_crc_mismatched_samples_skip_or_fail(
    folder, gcs_bucket, gcs_upload_tree, tmp_path, decoders
):
    gcs_upload_tree(str(folder), f"gs://{gcs_bucket}/raw")
    out = f"gs://{gcs_bucket}/p"
    storage = Storage()
    pack(PackConfig(source=f"gs://{gcs_bucket}/raw", output=out, shard_size_mb=SHARD_MB), storage)
    packed = open_packed(out, storage)
    # Flip bytes inside sample 0's payload in its shard: the index's crc32c no longer matches.
    shard_uri = packed.shard_uri(int(packed.sample_shard[0]))
    data = bytearray(storage.read(shard_uri))
    at = int(packed.offset[0]) + int(packed.size[0]) // 2
    data[at : at + 8] = bytes(8)
    storage.write(shard_uri, bytes(data))
    # Another shard ends inside its last sample: "truncated", on threads and in processes alike.
    cut_shard = next(s for s in range(len(packed.shards)) if s != packed.sample_shard[0])
    cut = int(packed.shard_members()[cut_shard][-1])
    cut_uri = packed.shard_uri(cut_shard)
    storage.write(cut_uri, storage.read(cut_uri)[: int(packed.offset[cut]) + 10])
    report = tmp_path / "q.jsonl"
    counters = Counters()
    seq = _sequence(
        packed,
        tmp_path,
        counters=counters,
        quarantine_uri=str(report),
        shuffle=False,
        decoders=decoders,
    )
    batches = [seq[i] for i in range(len(seq))]
    assert sum(len(y) for _, y in batches) == 36
    # The replacement is a sample of the same shard; every other sample is there, decoded.
    table = {}
    good = set(range(len(packed))) - {0, cut}
    for p in good:
        payload = storage.read(packed.shard_uri(int(packed.sample_shard[p])))
        payload = payload[packed.offset[p] : packed.offset[p] + packed.size[p]]
        table[digest(decode_image(payload, size=SIZE))] = p
    got = [table.get(digest(r)) for x, _ in batches for r in x]
    assert None not in got and set(got) == good
    rows = {r["uri"].rsplit("#", 1)[1]: r for r in map(json.loads, report.read_text().splitlines())}
    assert set(rows) == {packed.keys[0], packed.keys[cut]}
    assert rows[packed.keys[0]]["reason"] == "corrupt"
    assert "crc32c" in rows[packed.keys[0]]["message"]
    assert rows[packed.keys[cut]]["reason"] == "truncated"
    seq.close()
    strict = _sequence(packed, tmp_path / "s", on_corrupt="fail", shuffle=False, decoders=decoders)
    with pytest.raises(DataError, match="crc32c mismatch"):
        for i in range(len(strict)):
            strict[i]
    strict.close()


def test_only_our_index_makes_a_folder_packed(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "d")
    assert open_packed(str(tmp_path / "d"), Storage()) is None  # no index.json: one failed read
    (tmp_path / "d" / "index.json").write_text('{"images": []}')
    assert open_packed(str(tmp_path / "d"), Storage()) is None  # someone else's index.json
    pack(PackConfig(source=str(folder), output=str(tmp_path / "p")), Storage())
    assert len(open_packed(str(tmp_path / "p"), Storage())) == 36


def test_pack_writes_only_into_an_output_it_marked_and_leaves_other_files(folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "index.json").write_text('{"mine": true}')
    cfg = PackConfig(source=str(folder), output=str(out), shard_size_mb=SHARD_MB)
    with pytest.raises(ConfigError, match=r"--output .*index\.json was not written by trainer"):
        pack(cfg, Storage())
    assert (out / "index.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "notes.txt"], "nothing written"
    (out / "index.json").unlink()
    assert pack(cfg, Storage()).merged
    assert (out / ".streamtrain-pack").is_file() and (out / "notes.txt").read_text() == "mine"
    # A marked output is pack's own: a part killed mid-shard resumes there.
    (out / "index.json").unlink()
    (out / "_SUCCESS").unlink()
    (out / "parts" / "00000.done").unlink()
    assert pack(cfg, Storage()).merged and (out / "notes.txt").read_text() == "mine"
