"""hesig: measure how much of a secret input leaks through a label-change oracle.

Layers, from the top; a module imports only its own layer or lower ones (tests/test_layout.py)::

    cli                       click options -> jobs; imports nothing heavy at start
    jobs/                     one module per command family; runstore (pinned config, checksummed
                              chunks, resume); executor (in-process; Ray behind the same seam)
    signature/ attacks/ defenses/
                              the perturbation-signature attack (directions, search, fingerprints,
                              decoders); sibling attacks (split_inference, vicious); defenses
    oracles/                  the only code that holds secrets: the Oracle protocol, the registry of
                              kinds (plaintext, ckks), wrappers
    models/                   classifiers with named split points, DCGAN generator, checkpoints
    data                      datasets as float32 [0, 1] NCHW tensors
    evaluation/ core/         metrics, risk, figures; errors, IO, runtime, the one source of defaults
"""

__version__ = "0.1.0"
