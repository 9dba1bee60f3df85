"""`make demo`: the main job end to end on this machine, with nothing to configure.

It starts gcp-storage-emulator on loopback, seeds a bucket with a generated dataset (three
classes of shapes, JPEG and PNG of mixed sizes), trains `small_cnn` with MirroredStrategy over
two logical CPU devices reading `gs://`, writes every output back to the bucket, copies them to
a local folder that outlives the emulator (`demo-output/` by default), and prints a summary:
validation accuracy and where each output is.

    python -m trainer.dev.demo [--keep-running] [--epochs N] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from trainer.dev.emulator import EMULATOR_ENV, Emulator
from trainer.logs import setup_logging

logger = logging.getLogger("trainer.dev.demo")

BUCKET = "streamtrain-demo"
MARKER = ".streamtrain-demo"  # in --output-dir: the demo wrote it, so the next run may replace it
# What a run writes: an unmarked folder holding only these is a demo's from before the marker.
_OUTPUT_NAMES = {
    "model.keras", "saved_model", "labels.txt", "metrics.json", "confusion_matrix.png",
    "BLESSED", "_SUCCESS", "checkpoints", "tensorboard", "quarantine",
}  # fmt: skip


def _seed(storage, root: str, prefix: str) -> int:
    from trainer.dev.synthetic import write_learnable_dataset

    write_learnable_dataset(
        root, classes=3, per_class=100, min_size=48, max_size=320, formats=("jpeg", "png"), seed=0
    )
    files = storage.list(root)
    storage.upload_dir(root, prefix)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.dev.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the emulator up after training, to browse the bucket; Ctrl-C or SIGTERM "
        "ends it",
    )
    parser.add_argument(
        "--output-dir",
        default="demo-output",
        help="where the run's outputs are copied to, to open after the demo ends (default "
        "%(default)s; replaced on every run, so one holding other files is refused)",
    )
    args = parser.parse_args(argv)
    setup_logging(0)
    foreign = _foreign(args.output_dir)
    if foreign:
        logger.error(
            "--output-dir %s: holds %s, which the demo did not write (no %s file), and the demo "
            "replaces that folder on every run; choose another --output-dir or empty it",
            args.output_dir,
            foreign,
            MARKER,
        )
        return 2
    started = time.monotonic()
    with Emulator() as emulator, tempfile.TemporaryDirectory(prefix="streamtrain-demo-") as tmp:
        os.environ[EMULATOR_ENV] = emulator.url
        from google.cloud import storage as gcs

        from trainer.config import build_config
        from trainer.data.storage import Storage
        from trainer.errors import TrainerError

        client = gcs.Client(project="streamtrain-demo")
        client.create_bucket(BUCKET)
        storage = Storage()
        data = f"gs://{BUCKET}/datasets/shapes"
        count = _seed(storage, os.path.join(tmp, "shapes"), data)
        logger.info("emulator %s: seeded %s with %d images", emulator.url, data, count)
        output = f"gs://{BUCKET}/runs/demo"
        config = build_config(
            [
                "--data",
                data,
                "--output",
                output,
                "--epochs",
                str(args.epochs),
                "--batch-size",
                "32",
                "--image-size",
                "48",
                "--cpu-replicas",
                "2",
                "--model",
                "small_cnn",
                "--min-val-accuracy",
                "0.9",
                "--log-every",
                "5",
                "--index",
                f"gs://{BUCKET}/datasets/shapes-index.json",
            ],
            env={},
        )
        from trainer.job import run

        try:
            code = run(config)
        except TrainerError as e:
            logger.error("%s", e)
            code = int(e.exit_code)
        local = _copy_outputs(storage, output, args.output_dir)
        metrics = json.loads((local / "metrics.json").read_text())
        summary = [
            "",
            f"streamtrain demo: exit code {code} in {time.monotonic() - started:.0f} s",
            f"  data:                {data} ({count} images, classes "
            f"{', '.join(metrics['class_names'])})",
            f"  replicas:            {metrics['replicas']} (MirroredStrategy, 2 logical CPUs)",
            f"  validation accuracy: {metrics['final'].get('val_accuracy', float('nan')):.4f} "
            f"(gate 0.9: {'passed' if metrics['quality_gate']['passed'] else 'FAILED'})",
            f"  images/s:            {metrics['images_per_s']:.0f}",
            f"  outputs, copied from {output}/ to {local}/:",
        ]
        version = metrics.get("exported", {}).get("version", "?")
        for name in (
            "model.keras",
            f"saved_model/{version}/",
            "labels.txt",
            "metrics.json",
            "confusion_matrix.png",
            "BLESSED",
            "_SUCCESS",
        ):
            there = (local / name).exists()
            summary.append(f"    {name:28s} {local / name if there else 'MISSING'}")
        for folder, what in (("checkpoints", "objects"), ("tensorboard", "event files")):
            files = [p for p in (local / folder).rglob("*") if p.is_file()]
            summary.append(f"    {folder + '/':28s} {local / folder} ({len(files)} {what})")
        print("\n".join(summary), flush=True)  # noqa: T201 - the demo's report to the user
        if args.keep_running:
            stop = _stop_on_sigterm()  # before the line: a SIGTERM right after it must count
            print(f"emulator left running at {emulator.url}; Ctrl-C to stop", flush=True)  # noqa: T201
            _wait_for(stop)
    return code


def _foreign(directory: str) -> str:
    """A file of `directory` that an earlier demo run did not write ("" if it may be replaced)."""
    from pathlib import Path

    local = Path(directory)
    if not local.exists() or (local / MARKER).is_file():
        return ""
    if not local.is_dir():
        return str(local)
    return next((str(p) for p in sorted(local.iterdir()) if p.name not in _OUTPUT_NAMES), "")


def _copy_outputs(storage, output: str, directory: str):
    """Every object under `output`, copied to `directory` (replaced), which outlives the demo."""
    from pathlib import Path

    local = Path(directory).resolve()
    if not _foreign(directory):  # checked at the start too: never remove a user's files
        shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True, exist_ok=True)
    (local / MARKER).write_text("written by the streamtrain demo, replaced on its next run\n")
    for uri in storage.list(output):
        path = local / uri[len(output) :].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(uri, str(path))
    return local


def _stop_on_sigterm() -> threading.Event:
    """An event that SIGTERM sets (the trainer's own handler, still installed, only votes)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def _wait_for(stop: threading.Event) -> None:
    """Until `stop` is set, or Ctrl-C."""
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
