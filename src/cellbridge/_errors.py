"""Exception types raised by CellBridge.

Every error CellBridge raises on purpose derives from :class:`CellBridgeError`, so a caller (and
the command line) can catch them all; :class:`CellBridgeInputError` is also a ``ValueError``.
"""


class CellBridgeError(Exception):
    """Base class of the errors CellBridge raises on purpose; the message names the fix."""


class CellBridgeInputError(CellBridgeError, ValueError):
    """The user's input cannot be used as given; the message names the fix."""


class TrainingDivergedError(CellBridgeError, RuntimeError):
    """Training produced a non-finite loss; the message names the epoch, the loss term and likely fixes."""


class DegenerateEmbeddingError(CellBridgeError, RuntimeError):
    """A model produced an embedding that is not finite or has collapsed (all cells at one point)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C) after its state was saved; the message says how to resume.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still stops.
    """


class CellBridgeWarning(UserWarning):
    """Doubtful but allowed input."""
