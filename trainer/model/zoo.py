"""Model construction: the seed's small CNN and keras.applications backbones under a new head.

Every model takes uint8 (or float32 in [0, 1]) images and rescales them itself, so the input
pipeline moves a quarter of float32's bytes. The backbone is one nested layer named `backbone`
(so it can be frozen, and its weights loaded, as a whole) and the head is a float32 Dense layer
named `logits`: the loss is computed from logits, and the export adds the softmax.

    with strategy.scope():
        model = build_model("mobilenet_v3_small", num_classes=5, image_size=(224, 224),
                            weights="imagenet")
        set_backbone_trainable(model, False)     # --freeze-epochs: train the head first
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import keras

logger = logging.getLogger(__name__)

BACKBONE = "backbone"
HEAD = "logits"


def _small_cnn(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    # The article's model: one Conv2D and Flatten, then the classifier added below.
    if weights == "imagenet":
        raise ValueError("small_cnn has no ImageNet weights; use --weights none or a file")
    inputs = keras.Input(shape=shape)
    x = keras.layers.Conv2D(32, (3, 3), activation="relu", name="conv")(inputs)
    net = keras.Model(inputs, keras.layers.Flatten()(x), name=BACKBONE)
    if weights:
        net.load_weights(weights)
    return net


@keras.saving.register_keras_serializable(package="streamtrain")
class Subsample(keras.layers.Layer):
    """Every `stride`-th pixel of each row and column, in the input's own dtype."""

    def __init__(self, stride: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, x):
        return x[:, :: self.stride, :: self.stride, :]

    def compute_output_shape(self, shape):
        return (shape[0], *(None if d is None else -(-d // self.stride) for d in shape[1:3]), 3)

    def get_config(self) -> dict:
        return {**super().get_config(), "stride": self.stride}


def _linear(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    # The head is the only layer that learns; build_model subsamples before it rescales, so a
    # step reads 1/64 of the pixels it is fed.
    if weights == "imagenet":
        raise ValueError("linear has no ImageNet weights; use --weights none or a file")
    inputs = keras.Input(shape=shape)
    net = keras.Model(inputs, keras.layers.Flatten()(inputs), name=BACKBONE)
    if weights:
        net.load_weights(weights)
    return net


def _application(factory: Callable[..., keras.Model], **extra: object):
    def backbone(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
        net = factory(include_top=False, weights=weights, input_shape=shape, pooling="avg", **extra)
        return keras.Model(net.input, net.output, name=BACKBONE)

    return backbone


# Name -> (backbone, input scale). Backbones with their own preprocessing layer expect pixel
# values in [0, 255]; the others get [0, 1].
_ARCHITECTURES: dict[str, tuple[Callable[..., keras.Model], float]] = {
    "small_cnn": (_small_cnn, 1 / 255),
    "linear": (_linear, 1 / 255),
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


# Models that see every n-th pixel of each row and column only.
_SUBSAMPLED = {"linear": 8}


def architectures() -> tuple[str, ...]:
    return tuple(_ARCHITECTURES)


def build_model(
    name: str,
    *,
    num_classes: int,
    image_size: tuple[int, int],
    input_dtype: str = "uint8",
    weights: str | None = None,
    pretrained: bool | None = None,
) -> keras.Model:
    """A classifier returning float32 logits; `weights`: None, "imagenet" or a backbone file.

    A pretrained backbone (`pretrained`, default: weights given) runs in inference mode: its
    BatchNormalization keeps its statistics, as the Keras transfer-learning guide does, also
    once it is unfrozen.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_ARCHITECTURES)}")
    make_backbone, scale = _ARCHITECTURES[name]
    inputs = keras.Input(shape=(*image_size, 3), dtype=input_dtype, name="image")
    # A float32 [0, 1] input is rescaled back to [0, 255] for backbones that expect it.
    if input_dtype == "float32":
        scale = scale * 255
    x, shape = inputs, (*image_size, 3)
    if name in _SUBSAMPLED:
        x = Subsample(_SUBSAMPLED[name], name="subsample")(x)
        shape = tuple(x.shape[1:])
    x = keras.layers.Rescaling(scale, name="rescale")(x)
    backbone = make_backbone(shape, weights)
    pretrained = bool(weights) if pretrained is None else pretrained
    x = backbone(x, training=False) if pretrained else backbone(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name=HEAD)(x)
    return keras.Model(inputs, logits, name=name)


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freezes or unfreezes the backbone; the head always trains."""
    model.get_layer(BACKBONE).trainable = trainable
