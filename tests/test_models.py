"""Every architecture builds untrained with the class count and input dtype asked for."""

import numpy as np
import pytest

from trainer.config import MODELS
from trainer.model.zoo import architectures, build_model


def test_config_and_models_agree_on_the_names():
    assert set(MODELS) == set(architectures())


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v3_small", "efficientnet_b0", "resnet50"])
def test_builds_and_predicts_float32_logits(name):
    model = build_model(name, num_classes=4, image_size=(64, 64))
    x = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    logits = model.predict(x, verbose=0)
    assert logits.shape == (2, 4) and logits.dtype == np.float32
    assert not np.allclose(logits.sum(axis=1), 1, atol=1e-4), "logits, not probabilities"
    assert model.get_layer("backbone").count_params() > 0
    assert model.inputs[0].dtype == "uint8"


def test_linear_reads_every_eighth_pixel_and_survives_a_save(tmp_path):
    import keras

    model = build_model("linear", num_classes=3, image_size=(64, 60))
    assert model.get_layer("subsample").output.shape == (None, 8, 8, 3)
    x = np.random.default_rng(0).integers(0, 256, size=(2, 64, 60, 3), dtype=np.uint8)
    changed = x.copy()
    changed[:, 1::8] = 255 - changed[:, 1::8]  # rows the model never reads
    logits = model.predict(x, verbose=0)
    assert np.array_equal(logits, model.predict(changed, verbose=0))
    changed[:, ::8, ::8] = 255 - changed[:, ::8, ::8]
    assert not np.allclose(logits, model.predict(changed, verbose=0))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert np.allclose(loaded.predict(x, verbose=0), logits)
