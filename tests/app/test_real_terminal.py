"""zootui in a real terminal (tmux at 80x24), as a new user meets it: keys sent in bursts, from the first
moment; ctrl+q in the middle of a reply."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from support import ROOT, zootui_command

from tui.store import DATABASE_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]


class Terminal:
    """One zootui in its own tmux server; the pane stays after zootui exits, so its end can be seen."""

    def __init__(self, data_dir: Path, config: str, size: tuple[int, int] = (80, 24)):
        self.socket = f"zootui-test-{uuid.uuid4().hex[:8]}"
        self.data_dir = data_dir
        config_file = data_dir / "config.toml"
        data_dir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(config)
        env = {"ZOOTUI_DATA_DIR": str(data_dir), "ZOOTUI_CONFIG_FILE": str(config_file), "PYTHONPATH": str(ROOT)}
        command = " ".join(["env", *(f"{key}={value}" for key, value in env.items()), *zootui_command()])
        width, height = size
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "zoo", command)
        self._tmux("set-option", "-t", "zoo", "remain-on-exit", "on")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True, env=os.environ
        ).stdout

    def send(self, text: str) -> None:
        """Text (with \\r for Enter) written to the terminal in one burst, as a paste or a script sends it."""
        self._tmux("send-keys", "-t", "zoo", "-l", text)

    def key(self, name: str) -> None:
        self._tmux("send-keys", "-t", "zoo", name)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "zoo")

    def exited(self) -> bool:
        return self._tmux("list-panes", "-t", "zoo", "-F", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True)

    def messages(self) -> list[tuple[str, str, str]]:
        path = self.data_dir / DATABASE_NAME
        if not path.exists():
            return []
        db = sqlite3.connect(path)
        try:
            return db.execute("SELECT role, content, state FROM messages ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the schema is still being made
            return []
        finally:
            db.close()


def wait_for(condition, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def footer(terminal: Terminal) -> str:
    return terminal.screen().rstrip("\n").splitlines()[-1]


def replies_done(terminal: Terminal, count: int) -> bool:
    replies = [state for role, _, state in terminal.messages() if role == "assistant"]
    return len(replies) == count and "streaming" not in replies


def test_bursts_from_the_first_moment_send_exactly_what_was_typed(tmp_path):
    terminal = Terminal(tmp_path / "data", "[chat]\nmax_tokens = 8\ntemperature = 0.0\n")
    try:
        terminal.send("typed at start\r")  # before zootui has even started
        wait_for(lambda: replies_done(terminal, 1), "the first reply")
        terminal.send("burst number 5\r")
        wait_for(lambda: replies_done(terminal, 2), "the second reply")
        terminal.send("burst number 6\r")
        wait_for(lambda: replies_done(terminal, 3), "the third reply")
        sent = [content for role, content, _ in terminal.messages() if role == "user"]
        assert sent == ["typed at start", "burst number 5", "burst number 6"]
        wait_for(lambda: "^r Retry" in footer(terminal), "the footer to offer regenerating", timeout=30)
        assert "f1 Keys" in footer(terminal), f"the footer fits 80 columns: {footer(terminal)!r}"
    finally:
        terminal.close()


def test_ctrl_q_during_a_reply_stops_it_saves_it_and_exits(tmp_path):
    terminal = Terminal(tmp_path / "data", "[chat]\nmax_tokens = 2000\ntemperature = 0.0\n")
    try:
        time.sleep(1)
        terminal.send("Write a very long story about a zoo.\r")
        wait_for(
            lambda: any(role == "assistant" and len(content) > 40 for role, content, _ in terminal.messages()),
            "the reply to stream",
        )
        terminal.key("C-q")
        wait_for(terminal.exited, "zootui to exit", timeout=30)
        [(user, _, _), (_, reply, reply_state)] = terminal.messages()
        assert user == "user"
        assert reply_state == "stopped" and reply, "what was generated is kept, marked stopped"
    finally:
        terminal.close()
