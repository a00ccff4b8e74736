"""Decoders that turn fingerprints E_x back into images: features, training, checkpoints."""

from .checkpoint import FingerprintDecoder
from .features import FingerprintFeatures
from .train import DecoderTrainingReport, decode, train_decoder

__all__ = ["FingerprintDecoder", "FingerprintFeatures", "DecoderTrainingReport", "decode", "train_decoder"]
