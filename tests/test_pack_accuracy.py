"""A pack sized for the training size loses no accuracy: a model trained from a --short-side
pack (its small images raw) scores what one trained from a --max-side pack scores, with the same
seed and steps, and its export still serves full-size image bytes. Scaled down from 448 vs 256
for 224 px training: --max-side 64 vs --short-side 37 for 32 px."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.trainer_runs import metrics, run

from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.pack.format import open_packed
from trainer.pack.writer import PackConfig, pack

SERVE = r"""
import json, sys
import tensorflow as tf
export_dir, paths = sys.argv[1], json.loads(sys.argv[2])
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
result = serve(image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
print(json.dumps([s.decode() for s in result["label"].numpy()]))
"""


@pytest.mark.slow
def test_a_short_side_pack_trains_as_well_as_a_max_side_pack(tmp_path):
    source = tmp_path / "src"
    write_learnable_dataset(str(source), classes=4, per_class=40, min_size=60, max_size=160, seed=7)
    packs = {
        "max_side": PackConfig(source=str(source), output=str(tmp_path / "p64"), max_side=64),
        "short_side": PackConfig(
            source=str(source), output=str(tmp_path / "p37"), short_side=37, raw_max_pixels=2400
        ),
    }
    accuracy = {}
    for name, cfg in packs.items():
        pack(cfg, Storage())
        out = tmp_path / f"run-{name}"
        result = run(
            f"--data={cfg.output}",
            f"--output={out}",
            "--image-size=32",
            "--epochs=4",
            "--batch-size=16",
            "--val-split=0.25",
            "--seed=3",
            "--decode-processes=0",
        )
        assert result.code == 0, result.log[-3000:]
        assert not result.lines("WARNING.*re-pack"), "both packs suit 32 px training"
        accuracy[name] = metrics(out)["final"]["val_accuracy"]
    raw = open_packed(packs["short_side"].output, Storage()).exts.count("npy")
    assert 0 < raw < 160, "some images raw, the others JPEG"
    assert accuracy["max_side"] >= 0.9, accuracy  # the data is learnable at all
    assert abs(accuracy["short_side"] - accuracy["max_side"]) <= 0.005, accuracy

    # The export still takes the original, full-size bytes (up to 160 px here).
    files = sorted(str(p) for p in source.rglob("*.*"))[::8]
    served = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            str(next((tmp_path / "run-short_side").glob("saved_model/*"))),
            json.dumps(files),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    labels = json.loads(served.stdout.strip().splitlines()[-1])
    right = sum(label == path.split("/")[-2] for label, path in zip(labels, files, strict=True))
    assert right / len(files) >= 0.9, (right, len(files))
