"""hesig: measure how much of a secret input leaks through a label-change oracle.

Layers (imports point downwards only)::

    cli -> attacks / decoders -> search / directions -> oracles -> models -> data / metrics
"""

__version__ = "0.1.0"
