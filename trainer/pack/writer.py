"""`trainer pack`: images (class folders or a manifest) → tar shards and one index.

    summary = pack(PackConfig(source="gs://b/raw", output="gs://b/packed", max_side=448), storage)

Samples are shuffled with `seed` (a pure function of it and the discovered order: class folders
sorted as Keras sorts them, or manifest order), so that every shard holds a sample of every
class and a block of a few shards makes mixed batches; `keep_order` packs in the discovered
order instead. They are cut into shards of about `shard_size_mb` in that order, so the shards a
run makes do not depend on timing: a re-run finds the shards already complete (their `.json`
sidecar is written after the tar) and continues after the last one. Part `p` of `parts`
packs the `p`-th slice of the samples (a Kubernetes Indexed Job runs one per pod); the merge
reads every part's sidecars, writes index.json and the quarantine report, and `_SUCCESS` last.
Images are read and re-encoded on a thread pool (the codecs release the GIL); the tar is
written in order by the calling thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator

import google_crc32c
import numpy as np

from trainer.data.decode import ImageDecodeError, decode_image, upright_size
from trainer.data.gcs import join
from trainer.data.index import DatasetIndex, discover
from trainer.data.raw_pixels import encode_raw
from trainer.data.storage import Storage
from trainer.errors import ConfigError, DataError, StorageNotFoundError
from trainer.pack.format import INDEX_NAME, SUCCESS_NAME, PackedIndex, shard_name
from trainer.pack.ownership import claim_output
from trainer.pack.provenance import (
    VERSION_KEY,
    check_finished,
    check_source,
    settings_change,
    source_change,
    source_version,
)
from trainer.pack.sizing import sizing_scale

try:
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the installation
    simplejpeg = None

logger = logging.getLogger(__name__)

_PACK_SALT = 0x9AC4
# Re-encoded images keep colour at half resolution, as camera JPEGs, ImageNet and Pillow's
# default do: simplejpeg's own default is 4:4:4, which decodes about 20 % slower and is larger.
_CHROMA = "4:2:0"


@dataclasses.dataclass(frozen=True)
class PackConfig:
    source: str
    output: str
    shard_size_mb: float = 128.0
    max_side: int = 0
    short_side: int = 0
    raw_max_pixels: int = 0
    quality: int = 90
    workers: int = 0  # 0: one per core
    part: int = 0
    parts: int = 1
    merge: bool = True  # merge when every part is done (the last step of an Indexed Job)
    classes: tuple[str, ...] | None = None
    max_pixels: int = 89_478_485
    seed: int = 0
    keep_order: bool = False

    def settings(self) -> dict[str, object]:
        """What decides the shards' content: a re-run must match it to resume."""
        settings: dict[str, object] = {
            "source": self.source,
            "shard_size_mb": self.shard_size_mb,
            "max_side": self.max_side,
            "quality": self.quality,
            "chroma": _CHROMA,
            "parts": self.parts,
            "order": "source" if self.keep_order else f"shuffled:{self.seed}",
        }
        # Only when set, so that a pack made before these existed still resumes.
        if self.short_side:
            settings["short_side"] = self.short_side
        if self.raw_max_pixels:
            settings["raw_max_pixels"] = self.raw_max_pixels
        return settings

    def order(self, n: int) -> np.ndarray:
        """The discovered positions in packing order."""
        if self.keep_order:
            return np.arange(n)
        return np.random.default_rng([self.seed, _PACK_SALT]).permutation(n)


@dataclasses.dataclass(frozen=True)
class PackSummary:
    shards_written: int
    shards_skipped: int
    samples: int
    quarantined: int
    merged: bool


def pack(cfg: PackConfig, storage: Storage) -> PackSummary:
    """Pack part `cfg.part`, then merge if `cfg.merge` and every part is done."""
    output = cfg.output.rstrip("/")
    if storage.exists(join(output, SUCCESS_NAME)):
        _check_finished(cfg, storage)
        logger.info("%s is already complete (%s exists); nothing to do", output, SUCCESS_NAME)
        return PackSummary(0, 0, 0, 0, merged=False)
    claim_output(output, storage)
    index = discover(cfg.source, storage=storage, class_names=cfg.classes)
    version = source_version(index)
    _check_other_parts(cfg, version, storage)
    written, skipped = _pack_part(cfg, index, version, storage)
    merged = None
    if cfg.merge and all(_part_done(cfg, p, storage) for p in range(cfg.parts)):
        merged = merge(cfg, index.class_names, storage)
    return PackSummary(
        shards_written=written,
        shards_skipped=skipped,
        samples=len(merged) if merged else 0,
        quarantined=0 if merged is None else _count_quarantined(cfg, storage),
        merged=merged is not None,
    )


def encode_sample(
    data: bytes,
    *,
    max_side: int,
    quality: int,
    max_pixels: int,
    short_side: int = 0,
    raw_max_pixels: int = 0,
) -> tuple[bytes, str]:
    """The bytes to store and their extension: kept as they are when already small enough,
    raw pixels when at most `raw_max_pixels` (after sizing), else a re-encoded JPEG."""
    height, width = upright_size(data)
    scale = sizing_scale(height, width, max_side=max_side, short_side=short_side)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size[0] * size[1] <= raw_max_pixels:
        return encode_raw(decode_image(data, size=size, max_pixels=max_pixels)), "npy"
    if scale < 1:
        return _jpeg(decode_image(data, size=size, max_pixels=max_pixels), quality), "jpg"
    kind = "jpg" if data[:3] == b"\xff\xd8\xff" else "png" if data[:4] == b"\x89PNG" else None
    if kind is None:  # GIF, WebP, TIFF, BMP: stored as PNG, losslessly
        pixels = decode_image(data, size=(height, width), max_pixels=max_pixels)
        return _png(pixels), "png"
    # Kept byte for byte; decoded once (at 1/8 scale for JPEG) so that bad inputs stay out.
    decode_image(data, size=(max(1, height // 8), max(1, width // 8)), max_pixels=max_pixels)
    return data, kind


def _png(pixels: np.ndarray) -> bytes:
    import cv2

    _, buf = cv2.imencode(".png", np.ascontiguousarray(pixels[:, :, ::-1]))  # OpenCV is BGR
    return buf.tobytes()


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    if simplejpeg is not None:
        return simplejpeg.encode_jpeg(
            np.ascontiguousarray(pixels), quality=quality, colorsubsampling=_CHROMA.replace(":", "")
        )
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality, subsampling=_CHROMA)
    return buf.getvalue()


def _sidecar_uri(cfg: PackConfig, number: int) -> str:
    return join(cfg.output.rstrip("/"), shard_name(cfg.part, number)[: -len(".tar")] + ".json")


def _done_uri(output: str, part: int) -> str:
    return join(output.rstrip("/"), "parts", f"{part:05d}.done")


def _part_done(cfg: PackConfig, part: int, storage: Storage) -> bool:
    return storage.exists(_done_uri(cfg.output, part))


def _read_json(uri: str, storage: Storage) -> dict | None:
    try:
        return json.loads(storage.read(uri))
    except StorageNotFoundError:
        return None


def _check_settings(cfg: PackConfig, found: dict, uri: str) -> None:
    if found.get("settings") != cfg.settings():
        raise ConfigError(
            f"--output {cfg.output}: {uri} was packed with other settings "
            f"({settings_change(found.get('settings') or {}, cfg.settings())}); use the same "
            "flags to resume, or a new --output"
        )


def _check_finished(cfg: PackConfig, storage: Storage) -> None:
    """A re-run onto a finished pack: refused unless its flags and source version match."""
    output = cfg.output.rstrip("/")
    doc = _read_json(join(output, INDEX_NAME), storage)
    if doc is None:
        return  # _SUCCESS alone: not ours to judge
    settings = dict(doc.get("settings") or {})
    check_finished(output, settings, cfg.settings())
    if settings.get(VERSION_KEY):
        index = discover(cfg.source, storage=storage, class_names=cfg.classes)
        if change := source_change(settings[VERSION_KEY], source_version(index)):
            raise DataError(
                f"--output {output} is a finished pack of another version of --source "
                f"{cfg.source} ({change}); pack into a new --output, or delete {output} and "
                "pack again"
            )


def _check_other_parts(cfg: PackConfig, version: dict, storage: Storage) -> None:
    """Refuse to start a part from another version of the source than a finished part's."""
    try:
        records = [
            u for u in storage.list(join(cfg.output.rstrip("/"), "parts")) if u.endswith(".done")
        ]
    except StorageNotFoundError:
        return  # no part has finished
    for uri in records[:1]:  # the finished parts agree, or the merge refuses
        done = _read_json(uri, storage) or {}
        part = int(uri.rsplit("/", 1)[-1].split(".")[0])
        check_source(cfg.output, cfg.source, done.get(VERSION_KEY), version, what=f"part {part}")


def _pack_part(
    cfg: PackConfig, index: DatasetIndex, version: dict, storage: Storage
) -> tuple[int, int]:
    """Write this part's missing shards; returns (written, already complete)."""
    lo = cfg.part * len(index) // cfg.parts
    hi = (cfg.part + 1) * len(index) // cfg.parts
    done = _read_json(_done_uri(cfg.output, cfg.part), storage)
    if done is not None:
        _check_settings(cfg, done, _done_uri(cfg.output, cfg.part))
        what = f"part {cfg.part}"
        check_source(cfg.output, cfg.source, done.get(VERSION_KEY), version, what=what)
        return 0, done["shards"]
    number, start = 0, lo
    while (sidecar := _read_json(_sidecar_uri(cfg, number), storage)) is not None:
        _check_settings(cfg, sidecar, _sidecar_uri(cfg, number))
        what = sidecar.get("name", _sidecar_uri(cfg, number))
        check_source(cfg.output, cfg.source, sidecar.get(VERSION_KEY), version, what=what)
        number, start = number + 1, sidecar["stop"]
    skipped = number
    if skipped:
        logger.info(
            "part %d: %d shards already complete, resuming at sample %d", cfg.part, skipped, start
        )
    shard = _Shard(start)
    limit = int(cfg.shard_size_mb * (1 << 20))
    order = cfg.order(len(index))[start:hi].tolist()
    for k, (pos, result) in enumerate(_encoded(cfg, index, order, storage), start):
        if isinstance(result, Exception):
            shard.quarantined.append(
                {
                    "uri": index.uris[pos],
                    "reason": getattr(result, "reason", "not_found"),
                    "message": str(result),
                }
            )
            logger.warning("skipping %s: %s", index.uris[pos], result)
        else:
            shard.add(pos, result, int(index.labels[pos]), index.uris[pos])
        if shard.bytes >= limit:
            _commit(cfg, storage, shard, number, stop=k + 1, version=version)
            number, shard = number + 1, _Shard(k + 1)
    if shard.entries or shard.quarantined or number == 0:
        _commit(cfg, storage, shard, number, stop=hi, version=version)
        number += 1
    record = {
        "settings": cfg.settings(),
        "shards": number,
        "start": lo,
        "stop": hi,
        "class_names": list(index.class_names),
        VERSION_KEY: version,
    }
    storage.write(_done_uri(cfg.output, cfg.part), json.dumps(record).encode())
    logger.info("part %d/%d: %d shards (%d new)", cfg.part, cfg.parts, number, number - skipped)
    return number - skipped, skipped


def _encoded(
    cfg: PackConfig, index: DatasetIndex, positions: list[int], storage: Storage
) -> Iterator[tuple[int, tuple[bytes, str] | Exception]]:
    """(position, (bytes, ext) or the error) in order, a bounded window ahead on a pool."""

    def work(pos: int) -> tuple[bytes, str] | Exception:
        try:
            data = storage.read(index.uris[pos])
            return encode_sample(
                data,
                max_side=cfg.max_side,
                short_side=cfg.short_side,
                raw_max_pixels=cfg.raw_max_pixels,
                quality=cfg.quality,
                max_pixels=cfg.max_pixels,
            )
        except (ImageDecodeError, StorageNotFoundError) as e:
            return e

    workers = cfg.workers or 2 * (os.cpu_count() or 1)
    window: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(workers, "pack") as pool:
        for pos in positions:
            window.append((pos, pool.submit(work, pos)))
            if len(window) >= 4 * workers:
                first, future = window.popleft()
                yield first, future.result()
        while window:
            first, future = window.popleft()
            yield first, future.result()


class _Shard:
    """One tar being filled in memory, with its index entries."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(  # noqa: SIM115 - closed by close(), when the shard is full
            fileobj=self.buffer, mode="w", format=tarfile.USTAR_FORMAT
        )
        self.entries: list[dict] = []
        self.quarantined: list[dict] = []

    @property
    def bytes(self) -> int:
        return self.buffer.tell()

    def _member(self, name: str, payload: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        # tarfile sets offset_data only when reading: the data follows this member's header.
        start = self.tar.offset + len(
            info.tobuf(tarfile.USTAR_FORMAT, self.tar.encoding, self.tar.errors)
        )
        self.tar.addfile(info, io.BytesIO(payload))
        return start

    def add(self, pos: int, sample: tuple[bytes, str], label: int, source: str) -> None:
        payload, ext = sample
        key = f"{pos:09d}"
        offset = self._member(f"{key}.{ext}", payload)
        self._member(f"{key}.cls", str(label).encode())
        self.entries.append(
            {
                "key": key,
                "ext": ext,
                "offset": offset,
                "size": len(payload),
                "label": label,
                "crc32c": google_crc32c.value(payload),
                "source": source,
            }
        )

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def _commit(
    cfg: PackConfig, storage: Storage, shard: _Shard, number: int, *, stop: int, version: dict
) -> None:
    """The tar, then its sidecar: a sidecar means a complete shard."""
    name = shard_name(cfg.part, number)
    data = shard.close()
    storage.write(join(cfg.output.rstrip("/"), name), data)
    sidecar = {
        "settings": cfg.settings(),
        "name": name,
        "bytes": len(data),
        "start": shard.start,
        "stop": stop,
        "samples": shard.entries,
        "quarantined": shard.quarantined,
        VERSION_KEY: version,
    }
    storage.write(_sidecar_uri(cfg, number), json.dumps(sidecar).encode())
    logger.info("%s: %d samples, %.1f MB", name, len(shard.entries), len(data) / 1e6)


def merge(cfg: PackConfig, class_names: tuple[str, ...], storage: Storage) -> PackedIndex:
    """Every part's sidecars → index.json and quarantine.jsonl, then `_SUCCESS`."""
    output = cfg.output.rstrip("/")
    shards, shard_bytes, rows, quarantined = [], [], [], []
    versions: dict[int, dict] = {}
    for part in range(cfg.parts):
        done = _read_json(_done_uri(output, part), storage)
        if done is None:
            raise DataError(f"{_done_uri(output, part)} is missing: part {part} has not finished")
        _check_settings(cfg, done, _done_uri(output, part))
        if done.get(VERSION_KEY):
            versions[part] = done[VERSION_KEY]
            first = min(versions)
            if change := source_change(versions[first], versions[part]):
                raise DataError(
                    f"--output {output}: parts {first} and {part} were packed from different "
                    f"versions of --source {cfg.source} ({change}); delete {output} and pack "
                    "again from a source that does not change meanwhile"
                )
        for number in range(done["shards"]):
            uri = _sidecar_uri(dataclasses.replace(cfg, part=part), number)
            sidecar = _read_json(uri, storage)
            if sidecar is None:
                raise DataError(f"{uri} is missing; re-run part {part} of trainer pack")
            quarantined += sidecar["quarantined"]
            if not sidecar["samples"]:
                continue
            rows += [(len(shards), s) for s in sidecar["samples"]]
            shards.append(sidecar["name"])
            shard_bytes.append(sidecar["bytes"])
    if not rows:
        raise DataError(f"--source {cfg.source}: no readable image to pack")
    packed = PackedIndex(
        root=output,
        class_names=tuple(class_names),
        shards=tuple(shards),
        shard_bytes=tuple(shard_bytes),
        sample_shard=np.asarray([r[0] for r in rows], np.int32),
        offset=np.asarray([r[1]["offset"] for r in rows], np.int64),
        size=np.asarray([r[1]["size"] for r in rows], np.int64),
        labels=np.asarray([r[1]["label"] for r in rows], np.int32),
        crc32c=np.asarray([r[1]["crc32c"] for r in rows], np.uint32),
        keys=tuple(r[1]["key"] for r in rows),
        exts=tuple(r[1]["ext"] for r in rows),
        sources=tuple(r[1]["source"] for r in rows),
        settings={**cfg.settings(), **({VERSION_KEY: versions[0]} if 0 in versions else {})},
    )
    report = "".join(json.dumps(q) + "\n" for q in quarantined)
    storage.write(join(output, "quarantine.jsonl"), report.encode())
    storage.write(join(output, INDEX_NAME), packed.to_json().encode())
    storage.write(join(output, SUCCESS_NAME), b"")
    logger.info(
        "packed %d samples into %d shards at %s (%d quarantined)",
        len(packed),
        len(shards),
        output,
        len(quarantined),
    )
    return packed


def _count_quarantined(cfg: PackConfig, storage: Storage) -> int:
    text = storage.read(join(cfg.output.rstrip("/"), "quarantine.jsonl")).decode()
    return sum(1 for line in text.splitlines() if line.strip())


def merge_only(cfg: PackConfig, storage: Storage) -> PackedIndex | None:
    """The final step of an Indexed Job: merge once every part is done (lists nothing)."""
    if storage.exists(join(cfg.output.rstrip("/"), SUCCESS_NAME)):
        logger.info("%s is already complete", cfg.output)
        return None
    claim_output(cfg.output, storage)
    first = _read_json(_done_uri(cfg.output, 0), storage)
    if first is None:
        raise DataError(f"{_done_uri(cfg.output, 0)} is missing: part 0 has not finished")
    return merge(cfg, tuple(first["class_names"]), storage)
