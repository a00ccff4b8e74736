"""Target classifiers: architectures with named split points, training and checkpoint IO."""

from .architectures import ARCHITECTURES, Square, build_model
from .checkpoint import LoadedModel, load_model, model_hash, save_model
from .split import layer_names, split_model
from .train import accuracy, train_classifier

__all__ = ["ARCHITECTURES", "Square", "build_model", "LoadedModel", "load_model", "model_hash", "save_model",
           "layer_names", "split_model", "accuracy", "train_classifier"]
