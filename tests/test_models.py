"""Every architecture builds untrained with the class count and input dtype asked for."""

import numpy as np
import pytest

from trainer.config import MODELS
from trainer.model.zoo import architectures, build_model


def test_config_and_models_agree_on_the_names():
    assert set(MODELS) == set(architectures())


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v3_small", "efficientnet_b0", "resnet50"])
def test_builds_and_predicts_probabilities(name):
    model = build_model(name, num_classes=4, image_size=(64, 64))
    x = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert model.inputs[0].dtype == "uint8"
