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


def to_json(conversation: Conversation, messages: list[Message], data_dir: Path) -> str:
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
        "messages": [
            {
                "id": message.id,
                "role": message.role,
                "content": message.content,
                "model": message.model,
                "state": message.state,
                "stats": message.stats,
                "moderation": message.moderation,
                "created_at": _timestamp(message.created_at),
                **({"image": _image(message.image, data_dir)} if message.image else {}),
            }
            for message in messages
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
        if message.state in (MessageState.STOPPED, MessageState.INTERRUPTED, MessageState.ERROR):
            heading += f" ({message.state})"
        lines += [f"## {heading}", ""]
        if message.image is not None:
            label = message.image.name.replace("[", "").replace("]", "")
            lines += [f"![{label}]({message.image.path(data_dir).as_uri()})", ""]
        lines += [message.content, ""]
    return "\n".join(lines)


def export(conversation: Conversation, messages: list[Message], format: str, data_dir: Path) -> str:
    """``data_dir`` is where the images of the messages are kept."""
    if format == "md":
        return to_markdown(conversation, messages, data_dir)
    if format == "json":
        return to_json(conversation, messages, data_dir)
    raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
