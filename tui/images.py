"""Images attached to messages: checked once, then kept content-addressed under the data dir.

``check_image`` decides whether a file is a picture zootui can show and a vision model can read:
PNG, JPEG, GIF, WebP or BMP, one frame, 8 bits per channel, RGB, grey or palette colours (with or
without alpha), at most ``MAX_PIXELS`` pixels and ``MAX_FILE_BYTES`` bytes, and decodable to its
last row. Anything else is an ``ImageError`` with one line naming the file, the problem and the fix.
The pixel bound is checked from the header, before anything is decoded, so a small file that
declares a huge canvas costs nothing.

``store_image`` copies an accepted file to ``<data dir>/images/<sha256>.<format>``; the message
keeps the sha256 (``StoredImage``), so the same picture attached twice is stored once and a stored
image is never changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tui.files import write_atomically

if TYPE_CHECKING:
    from PIL import Image

MAX_PIXELS = 32_000_000
MAX_FILE_BYTES = 50 * 2**20
IMAGES_DIR = "images"
# Pillow format name -> the extension stored images get.
FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
_ACCEPTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "RGB;16", "RGBA;16"}
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
"""File name endings offered when completing a path to attach."""


class ImageError(ValueError):
    """A file that cannot be attached; the message is one line naming it, the problem and the fix."""


@dataclass(frozen=True)
class CheckedImage:
    path: Path
    format: str
    """The stored extension (``FORMATS`` values)."""
    width: int
    height: int


@dataclass(frozen=True)
class StoredImage:
    """An image as a message keeps it: its content hash, its format and the name it was attached as."""

    sha256: str
    format: str
    name: str

    @property
    def file_name(self) -> str:
        return f"{self.sha256}.{self.format}"

    def path(self, data_dir: Path) -> Path:
        return images_dir(data_dir) / self.file_name


def images_dir(data_dir: Path) -> Path:
    return data_dir / IMAGES_DIR


def check_image(path: Path) -> CheckedImage:
    """The file's format and size if zootui can attach it; ImageError (one line) otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise ImageError(f"{path}: no such file; check the path")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageError(
            f"{path}: {size / 2**20:.0f} MB is more than the {MAX_FILE_BYTES // 2**20} MB an image may be; scale it down"
        )
    try:
        with Image.open(path) as image:
            _check_header(path, image)
            image.load()  # decodes every row: a truncated or damaged file fails here, not later
            return CheckedImage(path, FORMATS[image.format], image.width, image.height)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        # Pillow refuses canvases past twice its own limit before it reports their size.
        raise ImageError(f"{path}: it declares more than {MAX_PIXELS // 1_000_000} megapixels; scale it down") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image zootui can read; attach a PNG, JPEG, GIF, WebP or BMP file") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's decoders report damage with these
        raise ImageError(
            f"{path}: the image is truncated or damaged ({error}); save it again and attach the copy"
        ) from None


def _check_header(path: Path, image: Image.Image) -> None:
    if image.format not in FORMATS:
        raise ImageError(f"{path}: {image.format} images are not supported; save it as PNG or JPEG")
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        raise ImageError(
            f"{path}: {image.width}×{image.height} pixels is more than {MAX_PIXELS // 1_000_000} megapixels; scale it down"
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ImageError(f"{path}: the image is animated ({frames} frames); save the frame you mean as a PNG")
    if image.mode == "CMYK":
        raise ImageError(f"{path}: the image is in CMYK (print) colours; save it as RGB")
    if image.mode in _HIGH_DEPTH_MODES:
        raise ImageError(
            f"{path}: the image has more than 8 bits per channel ({image.mode}); save it with 8 bits per channel"
        )
    if image.mode not in _ACCEPTED_MODES:
        raise ImageError(f"{path}: colour mode {image.mode} is not supported; save it as an RGB PNG or JPEG")


def open_rgb(path: Path) -> Image.Image:
    """A checked image decoded to RGB, as MiniGPT-4 reads one (``Image.open(...).convert('RGB')``)."""
    from PIL import Image

    check_image(path)
    with Image.open(path) as image:
        return image.convert("RGB")


def store_image(data_dir: Path, path: Path) -> StoredImage:
    """Check ``path`` and keep a copy under the data dir, named by its sha256."""
    from converters import sha256_file  # the converters package costs an import the store should not pay

    checked = check_image(path)
    content = bytearray()
    digest = sha256_file(checked.path, on_block=content.extend)  # bounded: check_image capped the size
    stored = StoredImage(digest, checked.format, checked.path.name)
    target = stored.path(data_dir)
    if not target.is_file():
        write_atomically(target, bytes(content))
    return stored


def dropped_path(text: str) -> Path | None:
    """The image file a paste names, if it names one: what terminals paste for a dragged-and-dropped
    file (a path, quoted, or with shell backslash escapes, or a file:// URI), else None."""
    from urllib.parse import unquote, urlsplit

    candidate = text.strip()
    if not candidate or "\n" in candidate:
        return None
    if len(candidate) >= 2 and candidate[0] == candidate[-1] and candidate[0] in "'\"":
        candidate = candidate[1:-1]
    if candidate.startswith("file://"):
        candidate = unquote(urlsplit(candidate).path)
    for spelling in (candidate, re.sub(r"\\(.)", r"\1", candidate)):  # as typed, then unescaped
        path = Path(spelling).expanduser()
        if path.suffix.lower() in IMAGE_FILE_SUFFIXES and path.is_file():
            return path
    return None


def complete_path(typed: str) -> str | None:
    """The completion of a typed path: the one directory entry it can still name (a folder gets a
    trailing slash), or what all the entries it can name begin with; folders and images only, hidden
    ones only when the typed name starts with a dot."""
    cut = max(typed.rfind("/"), typed.rfind(os.sep)) + 1  # the text itself: Path would drop a final "."
    head, stem = typed[:cut], typed[cut:]
    folder = Path(head or ".").expanduser()
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return None
    matches = [
        entry
        for entry in entries
        if entry.name.startswith(stem)
        and (stem.startswith(".") or not entry.name.startswith("."))
        and (entry.is_dir() or entry.suffix.lower() in IMAGE_FILE_SUFFIXES)
    ]
    if not matches:
        return None
    if len(matches) == 1:
        completed = matches[0].name + ("/" if matches[0].is_dir() else "")
    else:
        completed = os.path.commonprefix([entry.name for entry in matches])  # noqa: RUF071 - names, not paths
    return head + completed if len(completed) > len(stem) else None
