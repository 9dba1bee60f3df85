"""The serving export: a float32 SavedModel that takes image bytes or pixels, in saved_model/<v>/.

* the in-graph decode matches trainer.data.decode on JPEG, PNG, greyscale, alpha and palette
  images, square and not, in every resize mode, and turns JPEGs upright by their EXIF tag;
* the float32 clone leaves Keras' global dtype policy as it found it;
* SavedModel versions only grow, run over run;
* end to end: the trainer CLI trains (float32 with --resize crop; bf16 with --resize pad), a
  fresh process loads the SavedModel with plain TensorFlow and labels the validation images
  from their own bytes; the labels agree with model.keras on the trainer's decode path, the
  accuracy with metrics.json, and under bf16 nothing in the SavedModel is bfloat16.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.trainer_runs import command as trainer_cmd
from support.trainer_runs import environ

from trainer.data.decode import decode_image
from trainer.dev.synthetic import natural_image, write_learnable_dataset

logger = logging.getLogger(__name__)


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _variants(rng: np.random.Generator, width: int, height: int) -> dict[str, bytes]:
    img = natural_image(rng, width=width, height=height)
    rgba = np.dstack([np.asarray(img), rng.integers(0, 256, (height, width), dtype=np.uint8)])
    return {
        f"jpeg-rgb-{width}x{height}": _encoded(img, "JPEG"),
        f"jpeg-grey-{width}x{height}": _encoded(img.convert("L"), "JPEG"),
        f"png-rgb-{width}x{height}": _encoded(img, "PNG"),
        f"png-grey-{width}x{height}": _encoded(img.convert("L"), "PNG"),
        f"png-rgba-{width}x{height}": _encoded(Image.fromarray(rgba, "RGBA"), "PNG"),
        f"png-palette-{width}x{height}": _encoded(img.convert("P"), "PNG"),
    }


@pytest.mark.parametrize("resize", ["squash", "crop", "pad"])
def test_the_graph_decodes_as_the_trainer_does(resize):
    import tensorflow as tf

    from trainer.export.signatures import decode_image_tf

    rng = np.random.default_rng(7)
    cases: dict[str, bytes] = {}
    # Square and not; JPEG DCT scales that TensorFlow has (1/2, 1/4) and that it lacks (3/8, 5/8).
    for width, height in [(48, 40), (96, 33), (128, 128), (333, 500), (77, 130)]:
        cases.update(_variants(rng, width, height))
    size = (48, 64)
    decode = tf.function(lambda b: decode_image_tf(b, size=size, resize=resize))
    means = {}
    for name, data in cases.items():
        want = decode_image(data, size=size, resize=resize).astype(int)
        got = decode(tf.constant(data)).numpy().astype(int)
        assert got.shape == want.shape == (*size, 3), name
        diff = np.abs(got - want)
        means[name] = diff.mean()
        if name.startswith("png"):
            # The same pixels and boxes; only OpenCV's fixed-point rounding differs.
            assert diff.max() <= 2, (name, diff.max())
        else:
            # A JPEG decoded at another DCT scale differs by a few levels, not a picture.
            assert diff.mean() < 6, (name, diff.mean())
    assert np.mean(list(means.values())) < 0.6, means


def test_the_graph_turns_jpegs_upright_by_their_exif_orientation():
    import tensorflow as tf

    from trainer.export.signatures import decode_image_tf, jpeg_orientation

    img = natural_image(np.random.default_rng(3), width=120, height=70)
    size = (40, 56)
    decoded = {}
    for endian in ("<", ">"):  # TIFF little- and big-endian
        for orientation in range(1, 9):
            exif = Image.Exif()
            exif[0x0112] = orientation
            exif.endian = endian
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
            data = buf.getvalue()
            assert int(jpeg_orientation(tf.constant(data))) == orientation
            want = decode_image(data, size=size, resize="crop").astype(int)
            got = decode_image_tf(tf.constant(data), size=size, resize="crop").numpy()
            decoded[endian, orientation] = (want, got.astype(int))
    assert int(jpeg_orientation(tf.constant(_encoded(img, "JPEG")))) == 1  # no EXIF at all
    for (endian, orientation), (_, got) in decoded.items():
        # Closest to the trainer's picture in the same orientation, far from every other.
        errors = {k: np.abs(got - decoded[endian, k][0]).mean() for k in range(1, 9)}
        assert min(errors, key=errors.get) == orientation, (endian, orientation, errors)
        assert errors[orientation] < 6, (endian, orientation, errors)


def test_the_graph_refuses_images_over_the_pixel_limit_before_decoding(monkeypatch):
    import tensorflow as tf

    from trainer.export import signatures

    monkeypatch.setattr(signatures, "MAX_PIXELS", 4000)
    decode = tf.function(lambda b: signatures.decode_image_tf(b, size=(16, 16)))
    for fmt in ("JPEG", "PNG", "GIF", "BMP"):
        small = Image.new("RGB", (100, 20), (10, 200, 30))  # 2,000 pixels
        assert decode(tf.constant(_encoded(small, fmt))).numpy()[8, 8].tolist() == [10, 200, 30]
        big = Image.new("RGB", (50, 90), (10, 200, 30))  # 4,500 pixels
        with pytest.raises(tf.errors.InvalidArgumentError, match="over 4000 pixels"):
            decode(tf.constant(_encoded(big, fmt)))


def test_the_float32_clone_leaves_the_global_policy_alone():
    import keras

    from trainer.export.serving import ExportSpec, float32_clone
    from trainer.model.zoo import build_model

    spec = ExportSpec("small_cnn", class_names=("a", "b"), image_size=(16, 16))
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        trained = build_model("small_cnn", num_classes=2, image_size=(16, 16))
        assert trained.get_layer("rescale").compute_dtype == "bfloat16"
        clone = float32_clone(trained, spec)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy(before)
    assert {layer.compute_dtype for layer in clone.layers} == {"float32"}
    assert all(
        np.array_equal(a, b)
        for a, b in zip(clone.get_weights(), trained.get_weights(), strict=True)
    )


def test_versions_increase_run_over_run(tmp_path):
    from trainer.data.storage import Storage
    from trainer.export.outputs import Outputs

    outputs = Outputs(str(tmp_path), storage=Storage())
    first = outputs.next_version()  # no saved_model/ yet: unix seconds
    ahead = first + 1000  # a version written by a clock that ran ahead
    (tmp_path / "saved_model" / str(ahead)).mkdir(parents=True)
    (tmp_path / "saved_model" / str(ahead) / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "saved_model" / "notes").mkdir()  # not a version
    assert outputs.next_version() == ahead + 1


# Runs in a fresh interpreter: plain TensorFlow, no trainer import.
SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

export_dir, requests, answer = sys.argv[1:4]
model = tf.saved_model.load(export_dir)
paths = json.loads(open(requests).read())
serve = model.signatures["serving_default"]
out = {"labels": [], "scores": []}
for i in range(0, len(paths), 16):
    batch = tf.constant([open(p, "rb").read() for p in paths[i : i + 16]])
    result = serve(image_bytes=batch)
    out["labels"] += [s.decode() for s in result["label"].numpy()]
    out["scores"] += result["scores"].numpy().tolist()
    out["scores_dtype"] = result["scores"].dtype.name
pixels = np.load(requests + ".npy")
result = model.signatures["serving_pixels"](pixels=tf.constant(pixels))
out["pixel_labels"] = [s.decode() for s in result["label"].numpy()]
out["pixel_scores"] = result["scores"].numpy().tolist()
out["signatures"] = {
    name: {
        "inputs": {k: [v.dtype.name, v.shape.as_list()]
                   for k, v in f.structured_input_signature[1].items()},
        "outputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in f.structured_outputs.items()},
    }
    for name, f in model.signatures.items()
}
out["variable_dtypes"] = sorted({v.dtype.name for v in model.variables})
proto = saved_model_pb2.SavedModel()
proto.ParseFromString(open(export_dir + "/saved_model.pb", "rb").read())
graph = proto.meta_graphs[0].graph_def
nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
out["bfloat16_nodes"] = sorted({
    n.op for n in nodes for a in n.attr.values()
    if a.type in (types_pb2.DT_BFLOAT16, types_pb2.DT_HALF)
    or set(a.list.type) & {types_pb2.DT_BFLOAT16, types_pb2.DT_HALF}
})
out["trainer_imported"] = any(m.split(".")[0] == "trainer" for m in sys.modules)
open(answer, "w").write(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    # 240 images, both sides in 32..96 independently (almost all non-square), JPEG and PNG.
    root = tmp_path_factory.mktemp("serving-shapes")
    write_learnable_dataset(str(root), classes=3, per_class=80, min_size=32, max_size=96, seed=9)
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "resize", "policy"),
    [("off", "crop", "float32"), ("bf16", "pad", "mixed_bfloat16")],
)
def test_the_savedmodel_serves_image_bytes_as_the_trainer_evaluates(
    shapes, tmp_path, precision, resize, policy
):
    import keras

    from trainer.data.index import discover
    from trainer.data.storage import Storage

    out = tmp_path / "run"
    proc = subprocess.run(
        trainer_cmd(
            "--data",
            str(shapes),
            "--output",
            str(out),
            "--model",
            "small_cnn",
            "--image-size",
            "32",
            "--epochs",
            "5",
            "--batch-size",
            "16",
            "--cpu-replicas",
            "2",
            "--learning-rate",
            "0.003",
            "--val-split",
            "0.5",
            "--keep",
            "last",
            "--resize",
            resize,
            "--mixed-precision",
            precision,
            "--min-val-accuracy",
            "0.5",
        ),
        capture_output=True,
        text=True,
        env=environ(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dtype_policy"] == policy
    exported = metrics["exported"]
    export_dir = Path(exported["saved_model"])
    assert export_dir.parent == out / "saved_model" and export_dir.name == str(exported["version"])
    assert (export_dir / "saved_model.pb").exists() and (out / "_SUCCESS").exists()
    # The gate judged the exported model, and said so.
    gate = metrics["quality_gate"]
    assert gate["judged_on"] == "exported model" and gate["passed"] is True
    assert gate["val_accuracy"] == exported["val_accuracy"]
    assert f"quality gate on the exported model: val_accuracy {gate['val_accuracy']:.4f}" in (
        proc.stderr
    )

    # The validation split, reproduced here; its images' own bytes go to the SavedModel.
    _, val = discover(str(shapes), storage=Storage()).split(val_split=0.5, seed=0)
    names = list(val.class_names)
    truth = [names[label] for label in val.labels]
    assert len(val) == 120 and exported["val_samples"] == 120
    suffixes = {Path(u).suffix for u in val.uris}
    assert suffixes == {".jpg", ".png"}
    sizes = [Image.open(u).size for u in val.uris]
    assert sum(w != h for w, h in sizes) > 100, "mostly non-square images"
    # Also greyscale, alpha and EXIF-rotated versions of a few, which training never saw.
    extra = []
    for i, uri in enumerate(val.uris[:6]):
        img = Image.open(uri).convert("RGB")
        for mode, fmt in (("L", "PNG"), ("L", "JPEG"), ("RGBA", "PNG")):
            path = tmp_path / f"extra_{i}_{mode}.{fmt.lower()}"
            img.convert(mode).save(path, format=fmt)
            extra.append(str(path))
        # Stored on its side, with the EXIF tag (6: rotate 90° clockwise) that puts it upright.
        exif = Image.Exif()
        exif[0x0112] = 6
        path = tmp_path / f"extra_{i}_exif6.jpg"
        img.transpose(Image.Transpose.ROTATE_90).save(path, format="JPEG", exif=exif.tobytes())
        extra.append(str(path))
    requests = tmp_path / "requests.json"
    paths = [*val.uris, *extra]
    requests.write_text(json.dumps(paths))
    # The trainer's evaluation path: its decoder, model.keras (the float32 clone, logits).
    pixels = np.stack(
        [decode_image(Path(p).read_bytes(), size=(32, 32), resize=resize) for p in paths]
    )
    np.save(str(requests) + ".npy", pixels[: len(val)])
    answer = tmp_path / "answer.json"
    served = subprocess.run(
        [sys.executable, "-c", SERVE, str(export_dir), str(requests), str(answer)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    reply = json.loads(answer.read_text())
    assert reply["trainer_imported"] is False

    model = keras.saving.load_model(out / "model.keras")
    logits = model.predict(pixels, verbose=0)
    expected = [names[i] for i in np.argmax(logits, axis=-1)]
    agree = np.mean(np.array(reply["labels"]) == np.array(expected))
    served_acc = np.mean(np.array(reply["labels"][: len(val)]) == np.array(truth))
    keras_acc = np.mean(np.array(expected[: len(val)]) == np.array(truth))
    logger.info(
        "%s/%s: top-1 agreement %.4f over %d images; accuracy served %.4f, model.keras %.4f, "
        "gate %.4f, final %.4f",
        precision,
        resize,
        agree,
        len(paths),
        served_acc,
        keras_acc,
        gate["val_accuracy"],
        metrics["final"]["val_accuracy"],
    )
    assert agree >= 0.99
    # The trainer's evaluation of the exported model (the gate) is the reference. Its decoder
    # and the graph's differ by a little (at 32 px, crop: mean 2.3 of 255 per pixel, against 3.5
    # before whole-image decoding), so a near tie may flip one image (1/120 is 0.83 points), as
    # the agreement above allows; the training-time evaluation also ran in other batch shapes.
    assert abs(served_acc - gate["val_accuracy"]) <= 1 / len(val) + 1e-9
    assert abs(served_acc - metrics["final"]["val_accuracy"]) <= max(0.005, 1 / len(val) + 1e-9)
    assert keras_acc == pytest.approx(gate["val_accuracy"], abs=1e-9)
    assert keras_acc >= 0.8, "the model learned: agreement between two random models is no proof"

    # serving_pixels: the same pixels as model.keras gets, the same scores (softmax of logits).
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    np.testing.assert_allclose(reply["pixel_scores"], softmax[: len(val)], atol=1e-5)
    assert reply["pixel_labels"] == expected[: len(val)]

    # float32 whatever the training policy: variables, outputs, and no bf16/fp16 op anywhere.
    assert reply["variable_dtypes"] == ["float32"] and reply["scores_dtype"] == "float32"
    assert reply["bfloat16_nodes"] == []
    assert reply["signatures"] == {
        "serving_default": {
            "inputs": {"image_bytes": ["string", [None]]},
            "outputs": {"scores": ["float32", [None, 3]], "label": ["string", [None]]},
        },
        "serving_pixels": {
            "inputs": {"pixels": ["uint8", [None, 32, 32, 3]]},
            "outputs": {"scores": ["float32", [None, 3]], "label": ["string", [None]]},
        },
    }
    assert (out / "labels.txt").read_text().split() == names
