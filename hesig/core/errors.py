"""User-facing errors.

Every failure a user can cause (bad option value, missing data, corrupt checkpoint, exhausted
query budget, ...) raises a :class:`HesigError` subclass with a one-line message. The CLI prints
that line and exits non-zero; nothing else in the package catches them.
"""


class HesigError(Exception):
    """Base class: the message is one line, meant for the person at the terminal."""

    exit_code = 2


class DataError(HesigError):
    """A dataset is missing, unknown, or cannot be read."""


class CheckpointError(HesigError):
    """A checkpoint or artifact is missing, corrupt, or belongs to something else."""


class ShapeError(HesigError):
    """Tensors whose shapes do not fit together (e.g. directions vs. model input)."""


class MismatchError(HesigError):
    """Artifacts derived from different models / directions / splits were combined."""


class InvalidValueError(HesigError):
    """A parameter value is out of range, NaN, or unknown."""


class QueryBudgetExhausted(HesigError):
    """The oracle's query budget would be exceeded by the next call."""

    exit_code = 3


class ClientRefusal(HesigError):
    """The victim's client policy refused to answer (its per-key decryption budget is spent).

    Not the attacker's own ``--budget``: the victim stopped answering. Exit code 3, like a budget.
    """

    exit_code = 3


class OutputError(HesigError):
    """An output path cannot be written."""
