"""The packed layout: tar shards in WebDataset form and the one index that describes them.

    ROOT/shard-00000-00000.tar   {key}.jpg|.png and {key}.cls (the label, decimal) per sample
    ROOT/shard-00000-00000.json  that shard's entries; written after the tar, so "complete"
    ROOT/parts/00000.done        part 0 of an Indexed Job finished (its shard count)
    ROOT/index.json              class names, shards, per sample shard/offset/size/label/crc32c
    ROOT/quarantine.jsonl        inputs that could not be read, with the reason
    ROOT/_SUCCESS                written last

The index is columnar (one list per field), so a million samples read as a few lists.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from trainer.data.gcs import join
from trainer.data.storage import Storage
from trainer.errors import ConfigError, DataError, StorageNotFoundError
from trainer.pack.validate import check_packed, int_column

FORMAT = "streamtrain-packed/1"
INDEX_NAME = "index.json"
SUCCESS_NAME = "_SUCCESS"
# Written first by trainer pack; found anywhere, so a pretty-printed or re-sorted index counts.
_FORMAT_KEY = re.compile(rb'"format"\s*:\s*"streamtrain-packed/')


def shard_name(part: int, number: int) -> str:
    return f"shard-{part:05d}-{number:05d}.tar"


@dataclasses.dataclass(frozen=True)
class PackedIndex:
    """Where every sample of a packed dataset is: plain data, saved as index.json."""

    root: str
    class_names: tuple[str, ...]
    shards: tuple[str, ...]  # file names under root
    shard_bytes: tuple[int, ...]
    sample_shard: np.ndarray  # int32, per sample
    offset: np.ndarray  # int64, where its bytes start in the shard
    size: np.ndarray  # int64
    labels: np.ndarray  # int32
    crc32c: np.ndarray  # uint32
    keys: tuple[str, ...]
    exts: tuple[str, ...]
    sources: tuple[str, ...] = ()
    settings: dict = dataclasses.field(default_factory=dict)  # trainer pack's; {} before them

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def shard_uri(self, shard: int) -> str:
        return join(self.root, self.shards[shard])

    def shard_members(self) -> list[np.ndarray]:
        """Sample positions of each shard, in the order they sit in it."""
        order = np.argsort(self.sample_shard, kind="stable")
        counts = np.bincount(self.sample_shard, minlength=len(self.shards))
        return np.split(order, np.cumsum(counts)[:-1])

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "settings": self.settings,
                "class_names": list(self.class_names),
                "shards": [
                    {"name": n, "bytes": b}
                    for n, b in zip(self.shards, self.shard_bytes, strict=True)
                ],
                "samples": {
                    "shard": self.sample_shard.tolist(),
                    "offset": self.offset.tolist(),
                    "size": self.size.tolist(),
                    "label": self.labels.tolist(),
                    "crc32c": self.crc32c.tolist(),
                    "key": list(self.keys),
                    "ext": list(self.exts),
                    "source": list(self.sources),
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, root: str, text: str) -> PackedIndex:
        """The index in `text`, checked field by field (trainer.pack.validate)."""
        name = join(root, INDEX_NAME)
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise DataError(f"{name}: not a {FORMAT} index (format {doc.get('format')!r})")
            s = doc["samples"]
            index = cls(
                root=root,
                class_names=tuple(doc["class_names"]),
                shards=tuple(x["name"] for x in doc["shards"]),
                shard_bytes=tuple(
                    int_column(
                        [x["bytes"] for x in doc["shards"]], "shards[].bytes", np.int64, name
                    )
                ),
                sample_shard=int_column(s["shard"], "samples.shard", np.int32, name),
                offset=int_column(s["offset"], "samples.offset", np.int64, name),
                size=int_column(s["size"], "samples.size", np.int64, name),
                labels=int_column(s["label"], "samples.label", np.int32, name),
                crc32c=int_column(s["crc32c"], "samples.crc32c", np.uint32, name),
                keys=tuple(s["key"]),
                exts=tuple(s["ext"]),
                sources=tuple(s.get("source", ())),
                settings=dict(doc.get("settings") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise DataError(f"{name}: unreadable packed index ({e}); re-run trainer pack") from None
        n = len(index.labels)
        columns = (index.sample_shard, index.offset, index.size, index.crc32c, index.keys)
        if any(len(c) != n for c in columns) or len(index.exts) != n:
            raise DataError(f"{name}: columns of unequal length; re-run trainer pack")
        check_packed(index, name)
        return index

    def select_classes(self, names: tuple[str, ...]) -> PackedIndex:
        """Only the samples of classes `names`, labelled in that order (--classes, as for class
        folders); a name the dataset lacks is a ConfigError."""
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise ConfigError(
                f"--classes (TRAINER_CLASSES): {', '.join(unknown)} not among the packed "
                f"dataset's classes {', '.join(self.class_names)}; pass some of those"
            )
        if names == self.class_names:
            return self
        new_label = np.full(len(self.class_names), -1, np.int32)
        for i, n in enumerate(names):
            new_label[self.class_names.index(n)] = i
        labels = new_label[self.labels]
        keep = np.flatnonzero(labels >= 0)
        return dataclasses.replace(
            self,
            class_names=tuple(names),
            sample_shard=self.sample_shard[keep],
            offset=self.offset[keep],
            size=self.size[keep],
            labels=labels[keep],
            crc32c=self.crc32c[keep],
            keys=tuple(self.keys[i] for i in keep),
            exts=tuple(self.exts[i] for i in keep),
            sources=tuple(self.sources[i] for i in keep) if self.sources else (),
        )


def open_packed(uri: str, storage: Storage) -> PackedIndex | None:
    """The index of the packed dataset at `uri`, or None when `uri` is not one: one read.

    index.json is written only by the merge, right before `_SUCCESS`, so a readable index
    is a complete dataset and nothing is listed.
    """
    if uri.lower().endswith((".csv", ".jsonl")):
        return None
    root = uri.rstrip("/")
    try:
        text = storage.read(join(root, INDEX_NAME))
    except StorageNotFoundError:
        return None
    if not _FORMAT_KEY.search(text):
        return None  # some other index.json beside class folders: not a packed dataset
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{join(root, INDEX_NAME)}: not UTF-8 ({e}); re-run trainer pack") from None
    return PackedIndex.from_json(root, decoded)
