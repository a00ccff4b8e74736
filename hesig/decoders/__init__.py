"""Decoders from fingerprints E_x to images: preprocessing, DCGAN generator, training, checkpoints."""

from .checkpoint import FingerprintDecoder
from .dcgan import DEFAULT_NGF, DCGANDecoder
from .features import FingerprintFeatures
from .train import DecoderTrainingReport, decode, train_decoder

__all__ = ["FingerprintDecoder", "DCGANDecoder", "DEFAULT_NGF", "FingerprintFeatures", "DecoderTrainingReport", "decode", "train_decoder"]
