"""The terminal before the full-screen app takes it: keep what the user types meanwhile, as typed.

Until Textual puts the terminal in raw mode (after its imports, about half a second), the terminal is in
its line mode: it echoes what is typed over the screen, holds it back until a newline, and turns the
Enter key's carriage return into a newline, which the app then reads as ctrl+j ("new line") instead of
Enter. Text and Enter typed while zootui starts therefore sat in the prompt unsent. The line mode is
switched off first thing, so keys typed from then on arrive as typed; what was typed even earlier (in
line mode) is read out at that moment with its newlines turned back into Enter, for the app to replay.
The user's own mode is put back on exit.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def keys_kept_as_typed(fd: int | None = None) -> Iterator[str]:
    """Yields the text typed before the switch (empty when the input, stdin by default, is no terminal)."""
    try:
        import termios

        fd = sys.stdin.fileno() if fd is None else fd
        original = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):  # not a terminal (or not POSIX)
        yield ""
        return
    except termios.error:
        yield ""
        return
    raw = termios.tcgetattr(fd)
    raw[0] &= ~termios.ICRNL  # iflag: Enter stays a carriage return
    raw[3] &= ~(termios.ICANON | termios.ECHO)  # lflag: no line buffering, no echo over the screen
    try:
        termios.tcsetattr(fd, termios.TCSANOW, raw)
        typed = bytearray()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            typed += chunk
        # In line mode Enter arrived as a newline: give it back as the carriage return Enter sends now.
        yield typed.decode("utf-8", "replace").replace("\n", "\r")
    finally:
        # Textual restores the mode it found, which was this one: put back the user's own.
        termios.tcsetattr(fd, termios.TCSADRAIN, original)
