"""Attached images: what is accepted, one clear line for everything else, content-addressed storage,
the schema migration, history, export and the command line."""

from __future__ import annotations

import json
import sqlite3
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import zootui_command
from tinyminigpt4 import GRADIENT, QUESTION, build_model_pair, reference

from tui.chat import ChatService
from tui.config import Settings
from tui.engine import EngineError, Engines
from tui.export import export
from tui.images import ImageError, StoredImage, check_image, images_dir, open_rgb, store_image
from tui.store import DATABASE_NAME, MIGRATIONS, SCHEMA_VERSION, Store


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path) -> Path:
    """A 20000×20000 PNG header with next to no data: what a decompression bomb looks like, 100 bytes."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0"))
        + _png_chunk(b"IEND", b"")
    )
    return path


def animated_gif(path: Path) -> Path:
    first, second = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    first.save(path, save_all=True, append_images=[second])
    return path


def truncated_png(path: Path) -> Path:
    data = GRADIENT.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (16, 16), (0, 128, 255, 0)).save(path)
    return path


def sixteen_bit_png(path: Path) -> Path:
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 250).save(path)
    return path


def text_file(path: Path) -> Path:
    path.write_text("not a picture at all\n")
    return path


BAD_IMAGES = [
    (text_file, "bad.png", "not an image zootui can read"),
    (truncated_png, "cut.png", "truncated or damaged"),
    (huge_png, "huge.png", "more than 32 megapixels"),
    (cmyk_jpeg, "print.jpg", "CMYK"),
    (sixteen_bit_png, "deep.png", "more than 8 bits per channel"),
    (animated_gif, "moving.gif", "animated \\(2 frames\\)"),
]


@pytest.mark.parametrize(("make", "name", "message"), BAD_IMAGES)
def test_bad_images_are_one_clear_line(tmp_path, make, name, message):
    path = make(tmp_path / name)
    with pytest.raises(ImageError, match=message) as raised:
        check_image(path)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(str(path))


def test_a_canvas_past_the_limit_names_its_size(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (8001, 4001)).save(path)
    with pytest.raises(ImageError, match="8001×4001 pixels is more than 32 megapixels"):
        check_image(path)


def test_a_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        check_image(tmp_path / "nowhere.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_ordinary_formats_are_accepted(tmp_path, fmt):
    path = tmp_path / f"picture.{fmt.lower()}"
    Image.open(GRADIENT).convert("RGB").save(path, fmt)
    checked = check_image(path)
    assert (checked.width, checked.height) == (61, 47)
    assert open_rgb(path).mode == "RGB"


def test_images_are_stored_once_by_content(tmp_path):
    data = tmp_path / "data"
    copy = tmp_path / "same-picture.png"
    copy.write_bytes(GRADIENT.read_bytes())
    first, second = store_image(data, GRADIENT), store_image(data, copy)
    assert first.sha256 == second.sha256 and (first.name, second.name) == ("gradient.png", "same-picture.png")
    assert [p.name for p in images_dir(data).iterdir()] == [first.file_name]
    assert first.path(data).read_bytes() == GRADIENT.read_bytes()


def test_an_older_database_gains_the_image_columns(tmp_path):
    path = tmp_path / DATABASE_NAME
    before_images = next(index for index, script in enumerate(MIGRATIONS) if "image_sha256" in script)
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:before_images]:
        old.executescript(script)
    old.execute(f"PRAGMA user_version = {before_images}")
    old.execute("INSERT INTO conversations (title, model, created_at, updated_at) VALUES ('kept', 'm', 0, 0)")
    old.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', 'hi', 0)")
    old.commit()
    old.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    [message] = store.messages(1)
    assert message.content == "hi" and message.image is None
    image = StoredImage("ab" * 32, "png", "cat.png")
    added = store.add_message(1, "user", "look", image=image)
    assert store.messages(1)[-1].image == image == added.image
    store.close()


@pytest.fixture
def vision_model(tmp_path_factory):
    return build_model_pair(tmp_path_factory.mktemp("library"))


@pytest.fixture
def service(isolated_dirs):
    store = Store(isolated_dirs / DATABASE_NAME)
    engines = Engines(Settings(), isolated_dirs)
    yield ChatService(store, Settings(), engines)
    engines.close()
    store.close()


def test_history_export_and_search_keep_the_image(service, vision_model, isolated_dirs):
    conversation = service.new_conversation(model=str(vision_model))
    image = service.attach_image(conversation.model, GRADIENT)
    service.add_user_message(conversation, "What animal is this?", image)
    [turn] = [m for m in service.history(conversation) if m["role"] == "user"]
    assert Path(turn["image"]) == images_dir(isolated_dirs) / image.file_name
    messages = service.store.messages(conversation.id)
    markdown = export(conversation, messages, "md", isolated_dirs)
    assert f"![gradient.png]({(images_dir(isolated_dirs) / image.file_name).as_uri()})" in markdown
    document = json.loads(export(conversation, messages, "json", isolated_dirs))
    assert document["messages"][0]["image"] == {
        "sha256": image.sha256,
        "format": "png",
        "name": "gradient.png",
        "path": str(images_dir(isolated_dirs) / image.file_name),
    }
    assert service.store.search("animal")[0].conversation_id == conversation.id


def test_a_text_only_model_refuses_an_image(service):
    with pytest.raises(EngineError, match="text-only model and cannot see images"):
        service.attach_image("smollm2-135m-instruct", GRADIENT)


def test_editing_a_message_keeps_its_image(service, vision_model):
    conversation = service.new_conversation(model=str(vision_model))
    image = service.attach_image(conversation.model, GRADIENT)
    service.add_user_message(conversation, "What is this?", image)
    edited = service.edit_last_user_message(conversation, "What colour is this?")
    assert edited.image == image and edited.content == "What colour is this?"


def run(cli_env, *args):
    return subprocess.run(zootui_command(*args), env=cli_env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_chat_with_an_image(cli_env, vision_model, isolated_dirs):
    result = run(cli_env, "chat", "-m", str(vision_model), "--image", str(GRADIENT), "--max-tokens", "6", QUESTION)
    assert result.returncode == 0, result.stderr
    ref = reference()  # the prompt MiniGPT-4 builds for this question: text, the image's 32 positions, text
    positions = len(ref["ids_before"]) + 32 + len(ref["ids_after"])
    assert f"prompt {positions}/{positions} evaluated" in result.stderr
    store = Store(isolated_dirs / DATABASE_NAME)
    [user, _reply] = store.messages(1)
    assert user.image is not None and user.image.name == "gradient.png"
    store.close()


def test_cli_refuses_an_image_for_a_text_only_model_and_saves_nothing(cli_env, isolated_dirs):
    result = run(cli_env, "chat", "--image", str(GRADIENT), "What is it?")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "text-only model and cannot see images" in result.stderr
    assert not (isolated_dirs / "images").exists()


@pytest.mark.parametrize(("make", "name", "message"), BAD_IMAGES)
def test_cli_refuses_a_bad_image_with_one_line(cli_env, vision_model, tmp_path, isolated_dirs, make, name, message):
    path = make(tmp_path / name)
    result = run(cli_env, "chat", "-m", str(vision_model), "--image", str(path), "What is it?")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and str(path) in result.stderr
    store = Store(isolated_dirs / DATABASE_NAME)
    assert store.conversations() == []
    store.close()


def test_a_dropped_file_is_recognised_in_the_forms_terminals_paste(tmp_path):
    from tui.images import dropped_path

    picture = tmp_path / "my pics" / "a (1).png"
    picture.parent.mkdir()
    picture.write_bytes(GRADIENT.read_bytes())
    for pasted in (
        str(picture),
        f"'{picture}'",
        f'"{picture}"\n',
        str(picture).replace(" ", "\\ ").replace("(", "\\(").replace(")", "\\)"),
        picture.as_uri(),
    ):
        assert dropped_path(pasted) == picture, pasted
    for text in ("What is in the picture?", str(tmp_path), f"{picture}\nand more", str(tmp_path / "missing.png")):
        assert dropped_path(text) is None, text


def test_paths_complete_to_folders_and_images(tmp_path):
    from tui.images import complete_path

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "zebra.png").write_bytes(b"")
    (tmp_path / "photos" / "zebu.jpg").write_bytes(b"")
    (tmp_path / "photos" / "zoo.txt").write_text("")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"")
    assert complete_path(f"{tmp_path}/pho") == f"{tmp_path}/photos/"
    assert complete_path(f"{tmp_path}/photos/z") == f"{tmp_path}/photos/zeb"  # zebra and zebu; zoo.txt is no image
    assert complete_path(f"{tmp_path}/photos/zebr") == f"{tmp_path}/photos/zebra.png"
    assert complete_path(f"{tmp_path}/photos/.") == f"{tmp_path}/photos/.hidden.png"
    assert complete_path(f"{tmp_path}/nowhere/x") is None
