"""Which version of the source a pack was made from, so that two versions are never mixed.

Each shard's sidecar, each part's `.done` record and index.json's settings carry the source's
version: its class names, its object count and the fingerprint of its (class names, uri,
label) listing (`DatasetIndex.fingerprint`). A part, a resume or a re-run that lists another
version refuses (exit 2) instead of labelling samples with another class list. Replacing an
image's bytes under the same name is not seen: the listing holds names, not contents.

    version = source_version(index)
    check_source(cfg, recorded, version, what="part 0")   # raises DataError if they differ
"""

from __future__ import annotations

from collections.abc import Mapping

from trainer.data.index import DatasetIndex
from trainer.errors import ConfigError, DataError

VERSION_KEY = "source_version"


def source_version(index: DatasetIndex) -> dict[str, object]:
    """What a record keeps of the listing it was packed from."""
    return {
        "class_names": list(index.class_names),
        "objects": len(index),
        "fingerprint": index.fingerprint(),
    }


def source_change(old: Mapping[str, object], new: Mapping[str, object]) -> str | None:
    """How version `new` of the source differs from `old`, in words; None when it does not."""
    if old.get("fingerprint") == new.get("fingerprint"):
        return None
    if old.get("class_names") != new.get("class_names"):
        before, now = (", ".join(v.get("class_names") or ()) for v in (old, new))
        return f"classes then: {before}; now: {now}"
    if old.get("objects") != new.get("objects"):
        return f"{old.get('objects')} objects then, {new.get('objects')} now"
    return f"as many objects ({new.get('objects')}) but other names or labels"


def check_source(
    output: str, source: str, recorded: Mapping | None, version: Mapping, *, what: str
) -> None:
    """Refuse to add to `what` (made from version `recorded`) from another version."""
    if not recorded:  # made before versions were recorded: nothing to compare with
        return
    change = source_change(recorded, version)
    if change:
        raise DataError(
            f"--output {output}: {what} was packed from another version of --source {source} "
            f"({change}); mixing them would mislabel samples: pack into a new --output, or "
            f"delete {output} and pack again"
        )


def settings_change(old: Mapping[str, object], new: Mapping[str, object]) -> str:
    """The settings that differ, as `name old → new`, comma-separated."""
    keys = sorted(set(old) | set(new), key=lambda k: (k != "source", k))
    return ", ".join(
        f"{k} {old.get(k, 'unset')} → {new.get(k, 'unset')}"
        for k in keys
        if old.get(k) != new.get(k)
    )


def check_finished(
    output: str, settings: Mapping[str, object], expected: Mapping[str, object]
) -> None:
    """Refuse other flags onto a finished pack (whose index.json has `settings`)."""
    found = {k: v for k, v in settings.items() if k != VERSION_KEY}
    if found != dict(expected):
        raise ConfigError(
            f"--output {output} is a finished pack made with other settings "
            f"({settings_change(found, expected)}); pack into a new --output, or delete "
            f"{output} and pack again"
        )
