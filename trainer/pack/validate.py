"""The checks a packed index passes as it is opened, so that a damaged or hand-edited
index.json fails at once (exit 2, naming the field) instead of crashing mid-epoch, training
on labels outside the head or reading bytes outside the dataset.

    labels = int_column(samples["label"], "samples.label", np.int32, name)
    check_packed(index, name)      # after PackedIndex is built from the columns
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.errors import DataError

_FIX = "re-run trainer pack"


def int_column(values: Any, field: str, dtype: type, name: str) -> np.ndarray:
    """`values` as a 1-D array of `dtype`; anything but integers in its range is a DataError."""
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise DataError(f"{name}: {field} must be a list of integers; {_FIX}")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        bad = int(np.flatnonzero((array < info.min) | (array > info.max))[0])
        raise DataError(f"{name}: {field}[{bad}] is {array[bad]}, out of range; {_FIX}")
    return array.astype(dtype)


def check_packed(index: Any, name: str) -> None:
    """Class names, shard names and every sample's shard, label, offset and size are sane."""
    _check_names(index.class_names, "class_names", name)
    if not index.class_names:
        raise DataError(f"{name}: class_names is empty; {_FIX}")
    _check_names(index.shards, "shards[].name", name)
    for i, shard in enumerate(index.shards):
        if shard in (".", "..") or "/" in shard or "\\" in shard:
            raise DataError(
                f"{name}: shards[{i}].name {shard!r} is not a file name inside the dataset's "
                f"folder (a path or '..' would read outside it); {_FIX}"
            )
    bytes_ = np.asarray(index.shard_bytes, np.int64)
    if bytes_.size and bytes_.min() < 0:
        raise DataError(f"{name}: shards[{int(np.argmin(bytes_))}].bytes is negative; {_FIX}")
    for field, values in (("samples.key", index.keys), ("samples.ext", index.exts)):
        if not all(isinstance(v, str) for v in values):
            raise DataError(f"{name}: {field} must be a list of strings; {_FIX}")
    _in_range(index.labels, "samples.label", len(index.class_names), "class_names", name)
    _in_range(index.sample_shard, "samples.shard", len(index.shards), "shards", name)
    for field, column in (("samples.offset", index.offset), ("samples.size", index.size)):
        if column.size and column.min() < 0:
            bad = int(np.argmin(column))
            raise DataError(f"{name}: {field}[{bad}] is {column[bad]}, negative; {_FIX}")
    if not len(index.labels):
        return
    end = index.offset + index.size
    beyond = np.flatnonzero(end > bytes_[index.sample_shard])
    if beyond.size:
        i = int(beyond[0])
        shard = int(index.sample_shard[i])
        raise DataError(
            f"{name}: samples.offset[{i}] + samples.size[{i}] = {end[i]} lies beyond the "
            f"{bytes_[shard]} bytes of {index.shards[shard]} (shards[{shard}].bytes); {_FIX}"
        )
    order = np.lexsort((index.offset, index.sample_shard))
    same_shard = index.sample_shard[order][1:] == index.sample_shard[order][:-1]
    overlap = np.flatnonzero(same_shard & (index.offset[order][1:] < end[order][:-1]))
    if overlap.size:
        a, b = int(order[overlap[0]]), int(order[overlap[0] + 1])
        raise DataError(
            f"{name}: samples {a} and {b} overlap in {index.shards[int(index.sample_shard[a])]} "
            f"(samples.offset and samples.size); {_FIX}"
        )


def _check_names(names: tuple[Any, ...], field: str, name: str) -> None:
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"{name}: {field} must be non-empty strings; {_FIX}")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise DataError(f"{name}: {field} holds {n!r} more than once; {_FIX}")
        seen.add(n)


def _in_range(column: np.ndarray, field: str, limit: int, of: str, name: str) -> None:
    bad = np.flatnonzero((column < 0) | (column >= limit))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{name}: {field}[{i}] is {column[i]}, outside 0..{limit - 1} ({limit} {of}); {_FIX}"
        )
