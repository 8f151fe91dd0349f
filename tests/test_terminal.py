"""The terminal's line mode while zootui starts, on a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import termios

from tui.terminal import keys_kept_as_typed


def test_keys_typed_before_the_switch_come_back_with_enter_and_later_keys_arrive_as_typed():
    main, terminal = pty.openpty()
    try:
        original = termios.tcgetattr(terminal)
        os.write(main, b"hello\r")  # typed in line mode: the terminal turns Enter into a newline
        with keys_kept_as_typed(terminal) as typed_ahead:
            assert typed_ahead == "hello\r"
            os.write(main, b"more\r")
            assert os.read(terminal, 64) == b"more\r", "no line buffering, Enter stays a carriage return"
        assert termios.tcgetattr(terminal) == original, "the user's own mode is back"
    finally:
        os.close(main)
        os.close(terminal)


def test_without_a_terminal_nothing_changes(tmp_path):
    with open(tmp_path / "not-a-tty", "w+") as file, keys_kept_as_typed(file.fileno()) as typed_ahead:
        assert typed_ahead == ""
