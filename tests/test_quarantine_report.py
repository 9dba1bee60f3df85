"""The quarantine report lists every object a worker skipped once, training's and validation's,
and matches metrics.json's count (it held validation's alone when both Sequences rewrote it)."""

from __future__ import annotations

import json
import shutil

from support.trainer_runs import metrics, run

from trainer.data.index import discover
from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset


def test_one_report_with_both_splits(tmp_path):
    data = tmp_path / "data"
    write_learnable_dataset(str(data), classes=2, per_class=24, min_size=32, max_size=48, seed=5)
    bad = []
    for k in range(8):
        cls = sorted(p.name for p in data.iterdir())[k % 2]
        path = data / cls / f"zz_bad_{k}.jpg"
        path.write_bytes(b"<html>503 Service Unavailable</html>")
        bad.append(str(path))
    train, val = discover(str(data), storage=Storage()).split(val_split=0.5, seed=0)
    assert set(bad) & set(train.uris) and set(bad) & set(val.uris), "bad objects in both splits"
    out = tmp_path / "out"
    result = run(
        f"--data={data}",
        f"--output={out}",
        "--image-size=32",
        "--epochs=1",
        "--batch-size=8",
        "--val-split=0.5",
        "--decode-processes=0",
    )
    assert result.code == 0, result.log[-3000:]
    report = [json.loads(line) for line in (out / "quarantine" / "worker-0.jsonl").open()]
    assert sorted(r["uri"] for r in report) == sorted(bad)
    assert {r["reason"] for r in report} == {"not_an_image"}
    found = metrics(out)
    assert found["counters"]["skipped"] == len(bad) == len(found["quarantined"])
    shutil.rmtree(out)
