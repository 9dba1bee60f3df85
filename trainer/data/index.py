"""Dataset discovery: which objects to train on, with which labels.

Two layouts are understood:

* class folders, ``root/<class>/<image>``, local or ``gs://bucket/prefix``: class names are the
  sub-folder names sorted exactly as ``keras.utils.image_dataset_from_directory`` sorts them, so a
  model trained here and one trained on the same folder with Keras agree on label ids;
* a manifest, a ``.csv`` (``uri,label`` rows after a ``uri,label`` header, or from the first
  line if that is an image row) or ``.jsonl`` (``{"uri": ..., "label": ...}`` lines) file
  stored anywhere; relative URIs are resolved against its folder and normalised (``d/../x``
  and ``d//x`` are ``x``), so an image listed twice is found. Labels follow
  trainer.config.labels.

The result is a `DatasetIndex`: plain data (URIs, integer labels, class names) that can be saved to
and loaded from a JSON file, so that a bucket of a million objects is listed once.

    storage = Storage()
    index = load_or_discover("gs://bucket/flowers", storage=storage,
                             index_uri="gs://bucket/flowers-index.json")
    train, val = index.split(val_split=0.2, seed=0)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Sequence

import numpy as np

from trainer.config.labels import json_label, label_problem, shown
from trainer.data import storage as storage_lib
from trainer.data.gcs import GCS_SCHEME
from trainer.data.storage import Storage
from trainer.errors import DataError, StorageNotFoundError

logger = logging.getLogger(__name__)

# Keras's allowlist (image_dataset_utils.ALLOWLIST_FORMATS) plus formats Pillow also decodes.
# Keep Keras's five first: a folder holding only those lists the same files in both tools.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
INDEX_FORMAT = "streamtrain-index/1"


@dataclasses.dataclass(frozen=True)
class DatasetIndex:
    """The objects of a dataset and their labels; immutable plain data.

    `labels[i]` is the position of the class of `uris[i]` in `class_names`.
    """

    uris: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.uris) != len(self.labels):
            raise ValueError(f"{len(self.uris)} uris but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.uris)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """A content hash of (class names, uri, label) pairs: equal indexes, equal fingerprints."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.class_names).encode())
        for uri, label in zip(self.uris, self.labels, strict=True):
            digest.update(f"\n{label}\t{uri}".encode())
        return digest.hexdigest()[:16]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    def split(self, *, val_split: float, seed: int) -> tuple[DatasetIndex, DatasetIndex]:
        """Deterministic, stratified split into (train, validation).

        Each class contributes `round(n_class * val_split)` objects to validation, chosen by a
        permutation seeded with `seed` only, so the split does not depend on listing order
        (the index is sorted) nor on how many workers read it.
        """
        train, val = self.split_positions(val_split=val_split, seed=seed)
        return self.subset(train), self.subset(val)

    def split_positions(self, *, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The positions `split` puts in (train, validation), ascending."""
        if not 0 <= val_split < 1:
            raise ValueError(f"val_split must be in [0, 1), got {val_split}")
        labels = np.asarray(self.labels, dtype=np.int64)
        rng = np.random.default_rng([seed, 0x5B117])
        val_mask = np.zeros(len(labels), dtype=bool)
        for label in range(self.num_classes):
            members = np.flatnonzero(labels == label)
            n_val = round(len(members) * val_split)
            val_mask[rng.permutation(members)[:n_val]] = True
        return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)

    def subset(self, positions: np.ndarray) -> DatasetIndex:
        """The objects at `positions`, in that order."""
        return DatasetIndex(
            uris=tuple(self.uris[i] for i in positions),
            labels=tuple(self.labels[i] for i in positions),
            class_names=self.class_names,
            source=self.source,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": INDEX_FORMAT,
                "source": self.source,
                "class_names": list(self.class_names),
                "fingerprint": self.fingerprint(),
                "uris": list(self.uris),
                "labels": list(self.labels),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, *, name: str = "index") -> DatasetIndex:
        try:
            doc = json.loads(text)
            if doc.get("format") != INDEX_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {INDEX_FORMAT!r}")
            index = cls(
                uris=tuple(doc["uris"]),
                labels=tuple(int(x) for x in doc["labels"]),
                class_names=tuple(doc["class_names"]),
                source=doc.get("source", ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(
                f"{name}: not a valid dataset index ({e}); delete it to list the data again"
            ) from None
        if doc.get("fingerprint") not in (None, index.fingerprint()):
            raise DataError(
                f"{name}: fingerprint mismatch, the file was edited or truncated; "
                "delete it to list the data again"
            )
        return index


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_EXTENSIONS)


def discover(
    uri: str,
    *,
    storage: Storage,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    class_names: Sequence[str] | None = None,
) -> DatasetIndex:
    """Lists `uri` (class folders or a manifest) into a validated `DatasetIndex`.

    `class_names`, when given, fixes the classes and their order; every label found must be one
    of them. Raises `DataError` (exit code 2) for anything that cannot be trained on.
    """
    if is_manifest(uri):
        index = _from_manifest(uri, storage=storage, class_names=class_names)
    else:
        index = _from_class_folders(
            uri, storage=storage, extensions=tuple(extensions), class_names=class_names
        )
    if len(index) == 0:
        raise DataError(
            f"{uri}: no images found (looked for {', '.join(extensions)}); "
            "check --data points at the folder that holds the class folders"
        )
    present = [name for name, n in index.class_counts().items() if n > 0]
    if len(present) < 2:
        raise DataError(
            f"{uri}: found only one class ({', '.join(present) or 'none'}) with images; "
            "a classifier needs at least two class folders (root/<class>/<image>)"
        )
    logger.info("dataset %s: %d objects, %d classes", uri, len(index), index.num_classes)
    return index


def load_or_discover(
    uri: str,
    *,
    storage: Storage,
    index_uri: str | None = None,
    class_names: Sequence[str] | None = None,
) -> DatasetIndex:
    """Loads the saved index at `index_uri` if it exists, else lists `uri` and saves it there."""
    if index_uri and storage.exists(index_uri):
        index = DatasetIndex.from_json(storage.read(index_uri).decode(), name=index_uri)
        if index.source and index.source != uri:
            raise DataError(
                f"{index_uri}: index was built from {index.source}, not {uri}; "
                "point --index elsewhere or delete it"
            )
        logger.info("dataset index loaded from %s: %d objects", index_uri, len(index))
        return index
    index = discover(uri, storage=storage, class_names=class_names)
    if index_uri:
        storage.write(index_uri, index.to_json().encode())
        logger.info("dataset index saved to %s", index_uri)
    return index


def _relative(root: str, uri: str) -> str:
    return uri[len(root) :].lstrip("/")


def _from_class_folders(
    root: str,
    *,
    storage: Storage,
    extensions: tuple[str, ...],
    class_names: Sequence[str] | None,
) -> DatasetIndex:
    if storage_lib.is_gcs(root):
        root = root.rstrip("/")
    else:
        if not os.path.isdir(root):
            raise StorageNotFoundError(f"{root}: no such directory; check --data")
        root = os.path.abspath(root)  # the storage layer lists absolute paths
    everything = storage.list(root)
    if not everything:
        raise StorageNotFoundError(
            f"{root}: no objects under this prefix; check --data "
            "(gs://bucket/prefix of the class folders)"
        )
    if storage_lib.is_gcs(root):
        # Object stores have no empty folders: a class exists when some object lies below it.
        folders = {
            _relative(root, u).split("/", 1)[0] for u in everything if "/" in _relative(root, u)
        }
    else:
        # Keras lists the root's sub-directories, empty ones included; so do we, but not
        # symlinked ones: the listing does not follow them (trainer.data.localwalk).
        with os.scandir(root) as entries:
            folders = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
    # Keras: sorted(listdir(root)), hidden ('.'-prefixed) folders skipped.
    found = sorted(f for f in folders if not f.startswith("."))
    for name in found:
        problem = label_problem(name)
        if problem:
            raise DataError(
                f"{root}: class folder {shown(name)} {problem}; rename it (a class name is "
                "printed one per line in labels.txt)"
            )
    names = _check_class_names(found, class_names, where=root)
    position = {name: i for i, name in enumerate(names)}
    lowered = tuple(e.lower() for e in extensions)
    uris, labels = [], []
    for uri in everything:  # sorted by the storage layer
        rel = _relative(root, uri)
        if "/" not in rel or not rel.lower().endswith(lowered):
            continue
        folder = rel.split("/", 1)[0]
        if folder in position:
            uris.append(uri)
            labels.append(position[folder])
    return DatasetIndex(tuple(uris), tuple(labels), tuple(names), source=root)


def _check_class_names(
    found: Sequence[str], given: Sequence[str] | None, *, where: str
) -> list[str]:
    if given is None:
        return list(found)
    unknown = sorted(set(given) - set(found))
    if unknown:
        raise DataError(
            f"{where}: classes {', '.join(unknown)} given but not found; "
            f"found {', '.join(found) or 'none'}"
        )
    return list(given)


def _from_manifest(
    uri: str, *, storage: Storage, class_names: Sequence[str] | None
) -> DatasetIndex:
    text = storage.read(uri).decode("utf-8-sig", errors="replace")
    base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    rows = _parse_jsonl(uri, text) if uri.lower().endswith(".jsonl") else _parse_csv(uri, text)
    seen: dict[str, int] = {}
    entries: list[tuple[str, str]] = []
    for line_no, ref, label in rows:
        full = _resolve(uri, line_no, base, ref)
        if full in seen:
            same = "" if full == ref else f", both name {full}"
            raise DataError(
                f"{uri}:{line_no}: duplicate uri {ref} (first on line {seen[full]}{same}); "
                "each object may appear once"
            )
        seen[full] = line_no
        entries.append((full, label))
    found = sorted({label for _, label in entries})
    if class_names is not None:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            line_no = next(seen[u] for u, label in entries if label == unknown[0])
            raise DataError(
                f"{uri}:{line_no}: label {unknown[0]!r} is not one of the classes "
                f"{', '.join(class_names)}; fix the line or the class list"
            )
        names = list(class_names)
    else:
        names = found
    position = {name: i for i, name in enumerate(names)}
    entries.sort()
    return DatasetIndex(
        uris=tuple(u for u, _ in entries),
        labels=tuple(position[label] for _, label in entries),
        class_names=tuple(names),
        source=uri,
    )


def _resolve(manifest: str, line_no: int, base: str, ref: str) -> str:
    """The normalised URI of manifest entry `ref`: `d/../x` and `d//x` name the object `x`."""
    if not storage_lib.is_gcs(ref) and os.path.isabs(ref):
        return os.path.normpath(ref)
    if not storage_lib.is_gcs(ref) and not storage_lib.is_gcs(base):
        return os.path.abspath(os.path.join(base, ref))
    bucket, _, key = (ref if storage_lib.is_gcs(ref) else base)[len(GCS_SCHEME) :].partition("/")
    if not storage_lib.is_gcs(ref):
        key = f"{key}/{ref}" if key else ref
    # Resolved as a relative URL is; an object whose name holds '//' or '..' is not reachable.
    key = posixpath.normpath(key).lstrip("/") if key else key
    if not bucket or key in ("", ".") or key == ".." or key.startswith("../"):
        raise DataError(
            f"{manifest}:{line_no}: uri {ref} does not name an object in a bucket; "
            "write gs://BUCKET/PATH or a path relative to the manifest's folder"
        )
    return f"{GCS_SCHEME}{bucket}/{key}"


def _checked_label(manifest: str, line_no: int, label: str, written: object) -> str:
    problem = label_problem(label)
    if problem:
        raise DataError(
            f"{manifest}:{line_no}: label {shown(written)} {problem}; a label is a non-empty "
            "class name without control characters (newlines, tabs)"
        )
    return label


def _parse_csv(uri: str, text: str) -> list[tuple[int, str, str]]:
    rows = []
    reader = csv.reader(io.StringIO(text))
    first, end = True, 0
    for row in reader:
        line_no, end = end + 1, reader.line_num  # where the row starts: a quoted newline spans two
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if first:
            first = False
            if [c.lower() for c in cells] == ["uri", "label"]:
                continue  # the header
            if not cells[0].lower().endswith(IMAGE_EXTENSIONS):
                raise DataError(
                    f"{uri}:{line_no}: the first line {','.join(row)[:80]!r} is neither the "
                    "header 'uri,label' nor an image row; start the manifest with the line "
                    "uri,label"
                )
        if len(cells) != 2 or not cells[0] or not cells[1]:
            raise DataError(f"{uri}:{line_no}: expected 'uri,label', got {','.join(row)[:80]!r}")
        rows.append((line_no, cells[0], _checked_label(uri, line_no, cells[1], cells[1])))
    return rows


def _parse_jsonl(uri: str, text: str) -> list[tuple[int, str, str]]:
    rows = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            ref, value = doc["uri"], doc["label"]
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{uri}:{line_no}: expected a JSON object with 'uri' and 'label', got {line[:80]!r}"
            ) from None
        if not isinstance(ref, str) or not ref.strip():
            raise DataError(f"{uri}:{line_no}: 'uri' must be a non-empty string, got {line[:80]!r}")
        label = json_label(value)
        if label is None:
            raise DataError(
                f"{uri}:{line_no}: label {shown(value)} is not a class name; write a string "
                '("cat", "1") or an integer (1), not a fraction, true/false, null or a list'
            )
        rows.append((line_no, ref.strip(), _checked_label(uri, line_no, label, value)))
    return rows
