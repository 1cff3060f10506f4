"""Exception types raised by CellBridge."""


class CellBridgeInputError(ValueError):
    """The user's input cannot be used as given; the message names the fix."""


class CellBridgeWarning(UserWarning):
    """Doubtful but allowed input."""
