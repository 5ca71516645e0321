"""Configuration dataclasses: one schema for YAML files, command-line overrides and the config saved in checkpoints.

Every field carries a docstring right below it; `multitoken train --help` shows those texts, so they are the
documentation. Each dataclass validates itself in `__post_init__` and raises `ConfigError` naming the field and the fix.
The defaults of `TrainConfig` are the built-in default run (`multitoken train` with no arguments): a small byte-level
4-token model on the Python standard library, sized to finish in minutes on 2 CPU cores.
"""

from multitoken.config.checks import SEED_LIMIT, int_list
from multitoken.config.model import BLOCK_SWITCHES, ModelConfig, model_config_diff
from multitoken.config.train import DataConfig, OptimConfig, TrainConfig, from_dict, to_dict

__all__ = ["BLOCK_SWITCHES", "SEED_LIMIT", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "from_dict",
           "int_list", "model_config_diff", "to_dict"]
