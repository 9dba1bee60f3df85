"""Library use, like the article: `model.fit(ImageSequence(...), shuffle=False)` under
MirroredStrategy on 2 logical CPU devices (in a subprocess: logical devices are per process)."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from trainer.data.index import discover
    from trainer.model.zoo import build_model
    from trainer.data.sequence import ImageSequence
    from trainer.data.storage import Storage
    from trainer.dev.synthetic import write_learnable_dataset

    root = sys.argv[1]
    write_learnable_dataset(root, classes=3, per_class=30, min_size=32, max_size=96, seed=1)
    train, val = discover(root, storage=Storage()).split(val_split=0.2, seed=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    replicas = strategy.num_replicas_in_sync
    # 72 training images in batches of 10: the last holds 2, still a multiple of the replicas.
    seq = ImageSequence(train, batch_size=10, image_size=(32, 32), replica_multiple=replicas)
    val_seq = ImageSequence(val, batch_size=10, image_size=(32, 32), replica_multiple=replicas,
                            shuffle=False)
    with strategy.scope():
        model = build_model("small_cnn", num_classes=3, image_size=(32, 32))
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history = model.fit(seq, validation_data=val_seq, epochs=8, shuffle=False, verbose=0)
    print(json.dumps({"replicas": replicas, "epochs_seen": seq.epoch,
                      "batches": [len(seq[i][1]) for i in range(len(seq))],
                      "val_accuracy": history.history["val_accuracy"][-1]}))
""")


def test_fit_on_image_sequence_under_mirrored_strategy(tmp_path):
    proc = subprocess.run(
        ["timeout", "-k", "10", "300", sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Keras calls on_epoch_end after each epoch (and once more when its iterator resets).
    assert result["epochs_seen"] in (8, 9), "a new order every epoch"
    assert all(b % 2 == 0 for b in result["batches"])
    assert result["val_accuracy"] >= 0.8
