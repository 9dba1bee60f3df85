"""What an option can be: the model names, file suffixes, choice types and groups, and `_opt`.

`_opt` makes a dataclass field that carries everything the flag, variable, docs and
validation need; trainer/config/fields.py declares every option with it.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from trainer.errors import ExitCode

# The model module builds these by name; keep names and descriptions here so the CLI can
# validate --model without importing Keras. Read-only: it is shared by every importer.
MODELS: Mapping[str, str] = types.MappingProxyType(
    {
        "small_cnn": "a few convolution blocks trained from scratch; for smoke tests and CPUs",
        "linear": "a linear classifier on every 8th pixel: a step that costs almost nothing, "
        "to measure what the input pipeline delivers",
        "mobilenet_v3_small": "Keras MobileNetV3Small; the fastest pretrained-architecture model",
        "mobilenet_v3_large": "Keras MobileNetV3Large",
        "efficientnet_b0": "Keras EfficientNetB0",
        "resnet50": "Keras ResNet50; the slowest and largest",
    }
)

ENV_PREFIX = "TRAINER_"
CONFIG_ENV = "TRAINER_CONFIG"
MANIFEST_SUFFIXES = (".csv", ".jsonl")
WEIGHTS_SUFFIXES = (".keras", ".weights.h5")
BACKBONE_SUFFIXES = (".weights.h5", ".h5", ".keras")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

# Vertex AI custom training sets these; each is the default of one field.
AIP_DEFAULTS: Mapping[str, str] = types.MappingProxyType(
    {
        "output": "AIP_MODEL_DIR",
        "checkpoint_dir": "AIP_CHECKPOINT_DIR",
        "tensorboard_dir": "AIP_TENSORBOARD_LOG_DIR",
    }
)

# Shown in docs/configuration.md; the codes themselves live in trainer.errors.
EXIT_CODE_MEANINGS: Mapping[ExitCode, str] = types.MappingProxyType(
    {
        ExitCode.OK: "training finished (and passed the quality gate, if any)",
        ExitCode.CRASH: "unexpected error (a bug): the traceback is logged",
        ExitCode.BAD_INPUT: (
            "bad configuration or input data, or a read-only, full or over-quota disk (the "
            "line names the path): fix it, retrying will not help"
        ),
        ExitCode.QUALITY_GATE: "trained, but validation accuracy is below --min-val-accuracy",
        ExitCode.NO_GPU: "fewer GPUs visible than --expect-gpus",
        ExitCode.STORAGE_UNAVAILABLE: (
            "the object store kept failing past --storage-deadline-s, or the --weights "
            "imagenet download failed: retry later (or pass a weights file)"
        ),
        ExitCode.PEER_LOST: (
            "another worker of a multi-worker job was lost, or not reachable within "
            "--peer-wait-s at the start: restart the job, it resumes"
        ),
        ExitCode.STALLED: (
            "no step, evaluation or checkpoint finished within --stall-timeout-s (the error "
            "says where it was stuck): restart the job, it resumes"
        ),
        ExitCode.TERMINATED: (
            "terminated (SIGTERM): a checkpoint was written, restarting resumes the run"
        ),
    }
)

ImageSize = tuple[int, int]
MixedPrecision = Literal["auto", "off", "bf16", "fp16"]
Remainder = Literal["pad", "drop"]
InputDtype = Literal["uint8", "float32"]
OnCorrupt = Literal["skip", "fail"]
Resize = Literal["squash", "crop", "pad"]
Augment = Literal["none", "basic", "strong"]
Optimizer = Literal["adam", "adamw", "sgd"]
LrSchedule = Literal["constant", "cosine", "step"]
ClassWeight = Literal["none", "balanced"]
JitCompile = Literal["auto", "on", "off"]
Keep = Literal["best", "last"]
LogFormat = Literal["text", "json"]

# Group order in --help and in the docs.
GROUPS = (
    "Data",
    "Output",
    "Model",
    "Training",
    "Devices",
    "Input pipeline",
    "Object storage",
    "Multi-worker",
)


def _opt(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    group: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Sequence[str] = (),
    default_text: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field carrying everything the flag, env var, docs and validation need.

    It returns `dataclasses.field(...)`, which ruff's RUF009 cannot see through; hence the
    `noqa: RUF009` on fields whose type ruff does not know to be immutable.
    """
    assert group in GROUPS, group
    meta = {
        "help": help,
        "group": group,
        "gt": gt,
        "ge": ge,
        "lt": lt,
        "le": le,
        "choices": tuple(choices),
        "default_text": default_text,
        "metavar": metavar,
    }
    return dataclasses.field(default=default, metadata=meta)
