"""Bad images through the real ImageSequence over the GCS emulator, under `skip` and `fail`.

One bucket holds every case of the corpus (tests/badimages.py) under `odd/` and good images
under `good/`. Under `skip`, one epoch of an unshuffled ImageSequence is read once for the
module: each case either decodes to the pixels its `Check` describes (read at its own slot of
the batch) or is quarantined with its expected reason in the quarantine report, while the epoch
keeps its planned length. Under `fail`, a Sequence over the good images plus one rejected case
raises a DataError whose message names that object.

    RELIABILITY_REPORT=/tmp/rel.md .venv/bin/pytest -q tests/reliability/test_bad_images.py
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image
from support.badimages import bad_image_cases

from trainer.data.counters import Counters
from trainer.data.decode import JPEG_BACKEND
from trainer.data.index import DatasetIndex, discover
from trainer.data.sequence import ImageSequence
from trainer.data.storage import Storage
from trainer.errors import DataError

SIZE = (32, 48)  # (height, width): not square, so a rotation would show
BATCH = 8
GOOD = 10
CASES = bad_image_cases()
# The issue's fifteen kinds, each mapped to the corpus cases that stand for it.
ISSUE_KINDS = {
    "truncated JPEG": ["truncated_jpeg", "jpeg_cut_in_header"],
    "zero bytes": ["empty"],
    "HTML error page named .jpg": ["html_error_page"],
    "PNG named .jpg": ["png_named_jpg"],
    "CMYK JPEG": ["cmyk_jpeg_adobe"],
    "16-bit PNG": ["gray16_png_gradient"],
    "grayscale": ["grayscale_jpeg", "grayscale_png"],
    "RGBA": ["rgba_png"],
    "palette": ["palette_png", "palette_transparency_png"],
    "animated GIF": ["animated_gif"],
    "decompression bomb": ["bomb_png_50000x50000", "bomb_jpeg_60000x60000"],
    "1x1": ["one_by_one"],
    "EXIF-rotated": ["exif_orientation_6", "exif_orientation_8"],
    "TIFF": ["tiff_lzw", "gray16b_tiff_gradient"],
    "WebP": ["webp_lossless", "webp_lossy"],
}
KIND_OF = {name: kind for kind, names in ISSUE_KINDS.items() for name in names}


def _expected(case) -> tuple[str, object]:
    kind, detail = case.expect
    if kind == "rejected" and case.strict_jpeg_only and JPEG_BACKEND != "simplejpeg":
        return "decodes", None  # only a strict decoder sees it; Pillow decodes the garbage
    return kind, detail


def _good_png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (20 * i % 256, 100, 255 - 20 * i % 256)).save(buf, format="PNG")
    return buf.getvalue()


def _subset(index: DatasetIndex, uris: set[str]) -> DatasetIndex:
    keep = [i for i, u in enumerate(index.uris) if u in uris]
    return DatasetIndex(
        uris=tuple(index.uris[i] for i in keep),
        labels=tuple(index.labels[i] for i in keep),
        class_names=index.class_names,
        source=index.source,
    )


def _epoch(seq: ImageSequence, index: DatasetIndex) -> tuple[dict[str, np.ndarray], int, int]:
    """Pixels at each planned position's slot (keyed by its URI), samples served, planned."""
    rows: dict[str, np.ndarray] = {}
    served = planned = 0
    for b in range(len(seq)):
        x, y = seq[b]
        positions = seq.positions(epoch=0, index=b)
        served += len(y)
        planned += len(positions)
        for slot, position in enumerate(positions):
            rows.setdefault(index.uris[position], x[slot].copy())
    return rows, served, planned


@pytest.fixture(scope="module")
def corpus(gcs_emulator, tmp_path_factory):
    """The bucket, its index, what one `skip` epoch made of every object, and what one
    `fail` epoch made of the objects that should decode."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    storage = Storage()
    bucket = f"badimg-{uuid.uuid4().hex[:12]}"
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        admin = gcs.Client(
            project="streamtrain-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": gcs_emulator},
        )
        admin.create_bucket(bucket)
        blobs = admin.bucket(bucket)
        for case in CASES:
            blobs.blob(f"odd/{case.filename}").upload_from_string(case.data)
        for i in range(GOOD):
            blobs.blob(f"good/{i:02d}.png").upload_from_string(_good_png(i))
        admin.close()
        index = discover(f"gs://{bucket}/", storage=storage)
        report = tmp_path_factory.mktemp("quarantine") / "worker-0.jsonl"
        counters = Counters()
        with ImageSequence(
            index,
            batch_size=BATCH,
            image_size=SIZE,
            storage=storage,
            shuffle=False,
            remainder="pad",
            on_corrupt="skip",
            quarantine_uri=str(report),
            counters=counters,
            fetch_threads=8,
        ) as seq:
            rows, served, planned = _epoch(seq, index)
        readable = {u for u in index.uris if "/good/" in u} | {
            f"gs://{bucket}/odd/{c.filename}" for c in CASES if _expected(c)[0] == "decodes"
        }
        strict_index = _subset(index, readable)
        with ImageSequence(
            strict_index,
            batch_size=BATCH,
            image_size=SIZE,
            storage=storage,
            shuffle=False,
            on_corrupt="fail",
            fetch_threads=8,
        ) as strict:
            fail_rows, _, _ = _epoch(strict, strict_index)
        quarantine = {}
        if report.exists():
            for line in report.read_text().splitlines():
                entry = json.loads(line)
                quarantine[entry["uri"]] = entry
        yield {
            "bucket": bucket,
            "index": index,
            "storage": storage,
            "rows": rows,
            "fail_rows": fail_rows,
            "quarantine": quarantine,
            "served": served,
            "planned": planned,
            "skipped": counters.get("skipped"),
        }
    finally:
        mp.undo()


def test_corpus_covers_the_issues_fifteen_kinds(row):
    names = {c.name for c in CASES}
    missing = {kind: n for kind, n in ISSUE_KINDS.items() if not set(n) <= names}
    assert not missing
    assert len(ISSUE_KINDS) >= 15
    row(
        area="Bad images",
        case="corpus",
        injected=f"{len(CASES)} generated files covering the issue's {len(ISSUE_KINDS)} kinds",
        observed=f"every kind present: {', '.join(ISSUE_KINDS)}",
    )


def test_skip_epoch_keeps_its_length_and_reports_each_rejection(corpus, row):
    rejected = {
        f"gs://{corpus['bucket']}/odd/{c.filename}" for c in CASES if _expected(c)[0] == "rejected"
    }
    # One replica: "pad" pads to a multiple of 1, so the epoch is exactly the index.
    assert corpus["served"] == corpus["planned"] == len(corpus["index"])
    assert set(corpus["quarantine"]) == rejected
    assert corpus["skipped"] == len(rejected)
    row(
        area="Bad images",
        case="epoch length under skip",
        injected=f"{len(CASES)} corpus files + {GOOD} good PNGs in one bucket, batch {BATCH}",
        observed=f"{corpus['served']} samples served of {corpus['planned']} planned; "
        f"{len(corpus['quarantine'])} objects in the quarantine report, "
        f"counter skipped={corpus['skipped']}",
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_image_is_decoded_or_skipped_and_named_under_fail(case, corpus, row):
    uri = f"gs://{corpus['bucket']}/odd/{case.filename}"
    kind, detail = _expected(case)
    label = f"{case.name}" + (f" ({KIND_OF[case.name]})" if case.name in KIND_OF else "")
    injected = f"{case.filename}, {len(case.data)} bytes"
    if kind == "decodes":
        assert uri not in corpus["quarantine"], corpus["quarantine"].get(uri)
        pixels = corpus["rows"][uri]
        assert pixels.shape == (*SIZE, 3)
        assert np.array_equal(corpus["fail_rows"][uri], pixels), "fail decodes it the same"
        if detail is not None:
            assert detail.verify(pixels) == []
            observed = f"skip and fail: decoded {SIZE[0]}x{SIZE[1]}, {detail.description}"
        else:
            observed = f"decoded (a {JPEG_BACKEND} build cannot see this damage)"
        row(area="Bad images", case=label, injected=injected, observed=observed)
        return
    entry = corpus["quarantine"].get(uri)
    assert entry is not None, f"{uri} was not quarantined"
    assert entry["reason"] == detail, entry
    # Its slot in the batch holds a replacement: the pixels of another object that decoded.
    stand_in = corpus["rows"][uri]
    assert any(
        np.array_equal(stand_in, pixels)
        for other, pixels in corpus["rows"].items()
        if other not in corpus["quarantine"]
    )
    index = corpus["index"]
    subset = _subset(index, {u for u in index.uris if u == uri or "/good/" in u})
    with (
        ImageSequence(
            subset,
            batch_size=len(subset),
            image_size=SIZE,
            storage=corpus["storage"],
            on_corrupt="fail",
            shuffle=False,
            fetch_threads=4,
        ) as strict,
        pytest.raises(DataError) as info,
    ):
        strict[0]
    message = str(info.value)
    assert uri in message and "\n" not in message
    row(
        area="Bad images",
        case=label,
        injected=injected,
        observed=f"skip: quarantined, reason '{entry['reason']}'; "
        f"fail: DataError naming {uri.rsplit('/', 2)[-2]}/{case.filename}",
    )
