"""The one rule for a class name, wherever it comes from (manifest, class folder, --classes).

A label is a non-empty string, trimmed of surrounding spaces, without control characters:
labels.txt holds one per line and the confusion matrix draws them, so a newline, a tab or an
invisible format character in one would break both or make two classes look alike. A JSONL
integer label (`3`) is its decimal string (`"3"`); any other JSON number, `true`, `false`,
`null`, a list or an object is refused, so that `1` and `1.0` never become two classes.

    label_problem("cat")      # None: a valid label
    label_problem("a\\nb")     # "contains the control character U+000A"
    json_label(3)             # "3"
"""

from __future__ import annotations

import json
import unicodedata

# Cc: C0/C1 controls (newline, tab, NEL); Cf: invisible format characters (zero-width space,
# bidi marks); Zl/Zp: the line and paragraph separators str.splitlines splits on.
_REFUSED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def label_problem(label: str) -> str | None:
    """Why `label` (already trimmed) is not a valid class name, or None when it is."""
    if not label:
        return "is empty"
    for char in label:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"contains the control character U+{ord(char):04X}"
    return None


def json_label(value: object) -> str | None:
    """A JSONL `label` value as a class name: strings trimmed, integers in decimal, else None."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def shown(value: object) -> str:
    """A label as the user wrote it, for a message (JSON spelling, escapes visible)."""
    return json.dumps(value, ensure_ascii=True)[:80]
