"""A conversation as Markdown (to read or share) or JSON (to process).

An attached image stays where zootui keeps it (``<data dir>/images/<sha256>.<format>``): Markdown
links it beside its message, JSON names it (sha256, format, the name it was attached as, path).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tui import __version__
from tui.images import StoredImage
from tui.store import Conversation, Message, MessageState

FORMATS = ("md", "json")
ROLE_HEADINGS = {"system": "System", "user": "User", "assistant": "Assistant"}


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


def _image(image: StoredImage, data_dir: Path) -> dict[str, str]:
    return {"sha256": image.sha256, "format": image.format, "name": image.name, "path": str(image.path(data_dir))}


def to_json(
    conversation: Conversation, messages: list[Message], data_dir: Path, every_version: list[Message] | None = None
) -> str:
    """messages is the branch shown; every_version (all branches, linked by parent_id) is listed when given."""
    document = {
        "format": "zootui-conversation",
        "zootui_version": __version__,
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "params": conversation.params,
        "moderation_model": conversation.moderation_model,
        "created_at": _timestamp(conversation.created_at),
        "updated_at": _timestamp(conversation.updated_at),
        "branch": [message.id for message in messages],
        "messages": [
            {
                "id": message.id,
                "parent_id": message.parent_id,
                "role": message.role,
                "content": message.content,
                "model": message.model,
                "state": message.state,
                "stats": message.stats,
                "moderation": message.moderation,
                "created_at": _timestamp(message.created_at),
                **({"image": _image(message.image, data_dir)} if message.image else {}),
            }
            for message in (messages if every_version is None else every_version)
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def to_markdown(conversation: Conversation, messages: list[Message], data_dir: Path) -> str:
    lines = [
        "---",
        f"title: {json.dumps(conversation.title, ensure_ascii=False)}",
        f"model: {json.dumps(conversation.model, ensure_ascii=False)}",
        f"created: {_timestamp(conversation.created_at)}",
        f"exported_by: zootui {__version__}",
        "---",
        "",
        f"# {conversation.title}",
        "",
    ]
    if conversation.system_prompt:
        lines += ["## System", "", conversation.system_prompt, ""]
    for message in messages:
        heading = ROLE_HEADINGS[message.role]
        if message.versions > 1:
            heading += f" (version {message.version} of {message.versions})"
        if message.state in (MessageState.STOPPED, MessageState.INTERRUPTED, MessageState.ERROR):
            heading += f" ({message.state})"
        lines += [f"## {heading}", ""]
        if message.image is not None:
            label = message.image.name.replace("[", "").replace("]", "")
            lines += [f"![{label}]({message.image.path(data_dir).as_uri()})", ""]
        lines += [message.content, ""]
    return "\n".join(lines)


def export(
    conversation: Conversation,
    messages: list[Message],
    format: str,
    data_dir: Path,
    every_version: list[Message] | None = None,
) -> str:
    """messages: the branch shown (Markdown shows it); JSON also lists every_version, when given.
    ``data_dir`` is where the images of the messages are kept."""
    if format == "md":
        return to_markdown(conversation, messages, data_dir)
    if format == "json":
        return to_json(conversation, messages, data_dir, every_version)
    raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
