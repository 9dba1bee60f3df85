"""The one typed configuration: `build_config(argv, env)` -> a validated, frozen `TrainConfig`."""

from trainer.config.fields import TrainConfig
from trainer.config.flags import TRAIN_PARSER_OPTIONS, ArgumentParser, add_arguments
from trainer.config.load import build_config, config_from_namespace
from trainer.config.spec import MODELS
from trainer.config.table import FIELDS

__all__ = [
    "FIELDS",
    "MODELS",
    "TRAIN_PARSER_OPTIONS",
    "ArgumentParser",
    "TrainConfig",
    "add_arguments",
    "build_config",
    "config_from_namespace",
]
