"""Errors a user can cause, each worded as one line that names the problem and the fix."""


class ConversionError(Exception):
    """A problem with the input or the environment that the user can fix.

    The message is a single line; the CLI prints it and exits with status 2.
    """


class ConversionCancelled(ConversionError):
    """The caller set the cancel event; nothing was left under the output name."""

    def __init__(self, message: str = "conversion cancelled; no output was written") -> None:
        super().__init__(message)
