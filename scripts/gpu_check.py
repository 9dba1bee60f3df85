"""GPU check: MirroredStrategy over one GPU split into 2 logical GPUs, mixed precision, and
images/s of a model on streamed data (ImageSequence over JPEG files) against the same model on
synthetic in-memory tensors. Both go through `model.fit` under the same strategy, so the ratio
is the share of the accelerator's speed the input pipeline delivers. Then the trainer CLI runs
the full path (checkpoints, eval, export) and its metrics.json is reported too.

    python scripts/gpu_check.py                 # on the GPU machine (scripts/gpu_check.sh)
    python scripts/gpu_check.py --smoke         # CPU, tiny: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to test the script")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.model, args.image_size, args.batch_size, args.steps = (
            48,
            "small_cnn",
            32,
            8,
            3,
        )

    import numpy as np
    import tensorflow as tf

    from trainer.data.index import discover
    from trainer.data.sequence import ImageSequence
    from trainer.data.storage import Storage
    from trainer.dev.synthetic import write_benchmark_images
    from trainer.model.zoo import build_model

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.set_logical_device_configuration(
            gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=30000)] * 2
        )
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        policy = "mixed_bfloat16"
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        policy = "float32"
    import keras

    keras.mixed_precision.set_dtype_policy(policy)
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    work = tempfile.mkdtemp(prefix="gpu-check-")
    data = os.path.join(work, "images")
    started = time.monotonic()
    write_benchmark_images(data, count=args.images, fixed_side=512, classes=10)
    generated = time.monotonic() - started
    size = (args.image_size, args.image_size)
    index = discover(data, storage=Storage())

    def fit(dataset, steps: int) -> float:
        with strategy.scope():
            model = build_model(args.model, num_classes=index.num_classes, image_size=size)
            model.compile(
                optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)  # compile and warm up
        t = time.monotonic()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        return steps * args.batch_size / (time.monotonic() - t)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.batch_size, *size, 3), dtype=np.uint8)
    y = rng.integers(0, index.num_classes, size=(args.batch_size,), dtype=np.int32)
    synthetic = tf.data.Dataset.from_tensors((x, y)).repeat()
    results = {"synthetic_images_per_s": fit(synthetic, args.steps)}
    seq = ImageSequence(
        index,
        batch_size=args.batch_size,
        image_size=size,
        replica_multiple=strategy.num_replicas_in_sync,
        fetch_threads=32,
    )
    results["streamed_images_per_s"] = fit(seq, min(args.steps, len(seq) - 2))
    seq.close()
    results["streamed_over_synthetic"] = (
        results["streamed_images_per_s"] / results["synthetic_images_per_s"]
    )

    out = args.out or os.path.join(work, "run")
    cli = [
        sys.executable,
        "-m",
        "trainer",
        "train",
        "--data",
        data,
        "--output",
        out,
        "--model",
        args.model,
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        str(args.steps),
        "--val-split",
        "0.05",
        "--log-every",
        "10",
    ]
    cli += (
        ["--expect-gpus", "1", "--logical-gpus-per-gpu", "2", "--mixed-precision", "auto"]
        if (gpus)
        else ["--cpu-replicas", "2"]
    )
    code = subprocess.call(cli)
    report = {
        "devices": devices,
        "policy": policy,
        "model": args.model,
        "image_size": args.image_size,
        "global_batch": args.batch_size,
        "images": args.images,
        "generate_seconds": round(generated, 1),
        "gpu": tf.config.experimental.get_device_details(gpus[0]) if gpus else None,
        **{k: round(v, 3) for k, v in results.items()},
        "trainer_exit_code": code,
    }
    if code == 0:
        with open(os.path.join(out, "metrics.json")) as f:
            m = json.load(f)
        report.update(
            trainer_images_per_s=round(m["images_per_s"], 1),
            trainer_data_wait_fraction=round(m["data_wait_fraction"], 3),
            trainer_replicas=m["replicas"],
            trainer_dtype_policy=m["dtype_policy"],
        )
    print(json.dumps(report, indent=1))  # the check's output, for the closing note
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
