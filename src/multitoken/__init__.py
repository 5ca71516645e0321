"""multitoken: train and serve multi-token prediction language models (Gloeckle et al. 2024, arXiv 2404.19737)."""

from multitoken.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from multitoken.interop import load_model, load_tokenizer
from multitoken.model import MTPModel
from multitoken.training.loss import mtp_forward_backward

__version__ = "0.1.0"

__all__ = ["DataConfig", "MTPModel", "ModelConfig", "OptimConfig", "TrainConfig", "load_model", "load_tokenizer",
           "mtp_forward_backward", "__version__"]
