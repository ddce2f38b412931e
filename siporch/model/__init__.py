"""The trunk model: schema, loader and cross-checks."""

from siporch.model.loader import LoadedModel, load_model, model_hash
from siporch.model.schema import Model

__all__ = ["LoadedModel", "Model", "load_model", "model_hash"]
