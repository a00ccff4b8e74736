"""The perturbation-signature attack (Moran & Juvekar): directions, the batched boundary search,
the fingerprint file format and the decoders that turn fingerprints back into images."""
