"""Model construction: the seed's small CNN and keras.applications backbones, built untrained.

Every model takes uint8 (or float32 in [0, 1]) images and rescales them itself, so the input
pipeline moves a quarter of float32's bytes. The classifier head ends in a float32 softmax, which
keeps mixed-precision training numerically safe.

    with strategy.scope():
        model = build_model("mobilenet_v3_small", num_classes=5, image_size=(224, 224))
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import keras

logger = logging.getLogger(__name__)


def _small_cnn(inputs: keras.KerasTensor) -> keras.KerasTensor:
    # The article's model: one Conv2D, Flatten, then the (float32) classifier added below.
    return keras.layers.Flatten()(
        keras.layers.Conv2D(32, (3, 3), activation="relu", name="conv")(inputs)
    )


def _application(factory: Callable[..., keras.Model], **extra: object):
    def backbone(inputs: keras.KerasTensor) -> keras.KerasTensor:
        net = factory(include_top=False, weights=None, input_tensor=inputs, pooling="avg", **extra)
        return net.output

    return backbone


# Name -> (backbone, input scale). Backbones with their own preprocessing layer expect pixel
# values in [0, 255]; the others get [0, 1].
_ARCHITECTURES: dict[str, tuple[Callable[[keras.KerasTensor], keras.KerasTensor], float]] = {
    "small_cnn": (_small_cnn, 1 / 255),
    "mobilenet_v3_small": (
        _application(keras.applications.MobileNetV3Small, include_preprocessing=True),
        1.0,
    ),
    "mobilenet_v3_large": (
        _application(keras.applications.MobileNetV3Large, include_preprocessing=True),
        1.0,
    ),
    "efficientnet_b0": (_application(keras.applications.EfficientNetB0), 1.0),
    "resnet50": (_application(keras.applications.ResNet50), 1 / 255),
}


def architectures() -> tuple[str, ...]:
    return tuple(_ARCHITECTURES)


def build_model(
    name: str,
    *,
    num_classes: int,
    image_size: tuple[int, int],
    input_dtype: str = "uint8",
) -> keras.Model:
    """An untrained classifier; `name` is one of `architectures()`."""
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_ARCHITECTURES)}")
    backbone, scale = _ARCHITECTURES[name]
    inputs = keras.Input(shape=(*image_size, 3), dtype=input_dtype, name="image")
    # A float32 [0, 1] input is rescaled back to [0, 255] for backbones that expect it.
    if input_dtype == "float32":
        scale = scale * 255
    x = keras.layers.Rescaling(scale, name="rescale")(inputs)
    x = backbone(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    probs = keras.layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(inputs, probs, name=name)
