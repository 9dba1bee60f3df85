"""Which Keras dtype policy `--mixed-precision` means on the devices this run has."""

from __future__ import annotations

from trainer.distribute.strategy import StrategySetup


def resolve_policy(mode: str, setup: StrategySetup) -> str:
    """Keras dtype policy name for --mixed-precision: auto picks by the first GPU's generation."""
    if mode == "off" or (mode == "auto" and not setup.gpus):
        return "float32"
    if mode == "bf16":
        return "mixed_bfloat16"
    if mode == "fp16":
        return "mixed_float16"
    import tensorflow as tf

    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    major, _ = details.get("compute_capability", (0, 0))
    # bf16 needs Ampere (8.x) or newer; Volta/Turing get fp16 with loss scaling.
    if major >= 8:
        return "mixed_bfloat16"
    return "mixed_float16" if major >= 7 else "float32"
