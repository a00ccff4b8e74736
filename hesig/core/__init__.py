"""Shared plumbing at the bottom of the package: errors, IO (atomic writes, safetensors, hashes,
checksums), runtime helpers (device, index specs, seeds) and the one source of defaults."""
