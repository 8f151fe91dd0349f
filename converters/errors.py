"""Errors a user can cause, each worded as one line that names the problem and the fix."""


def one_line(text: str) -> str:
    """text with line breaks and other unprintable characters written as escapes (\\n, \\x00, \\u200b).

    Messages name what files hold (tensor names, keys, file names), and a file may hold anything.
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ConversionError(Exception):
    """A problem with the input or the environment that the user can fix.

    The message is a single line (made so, whatever names it quotes); the CLI prints it and exits with status 2.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(str(message)))


class ConversionCancelled(ConversionError):
    """The caller set the cancel event; nothing was left under the output name."""

    def __init__(self, message: str = "conversion cancelled; no output was written") -> None:
        super().__init__(message)
