"""Decode any image file the way the dataset was made: Pillow, then RGB.

The reduction script (and `../shared/data`) converted every image with `Image.convert("RGB")`:
alpha dropped without compositing, palettes and greyscale expanded, EXIF orientation not applied.
Training, evaluation and prediction all decode through `open_rgb`, so a model sees new images the way
it saw its training set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

# Modes whose samples do not fit in 8 bits: `convert("RGB")` clips them to white, so scale instead.
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


# The formats the project reads: what cameras, phones, generators and the web write. Pillow is asked for these
# alone, so a file in any other format it knows (DDS, EPS through Ghostscript, ICNS...) never reaches that
# format's parser. (A camera's multi-picture JPEG opens through JPEG's, as format MPO.)
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Why a file cannot be used, as `ImageDecodeError.code` (the API's `reason`) gives it.
REASON_CODES = {
    "unsupported_format": "an image format the project does not read",
    "not_an_image": "not an image in any format",
    "empty": "an empty file",
    "truncated": "the file ends before the image does",
    "undecodable": "the decoder failed on the file's contents",
    "decompression_bomb": "more pixels than Pillow's decompression-bomb limit",
    "too_small": "a side shorter than data.min_image_side",
    "not_a_file": "a folder",
    "missing": "gone, or a broken link",
    "permission_denied": "not readable",
    "unreadable": "the file could not be read (an I/O error)",
}


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image: the message names the file and the reason in words, `code` in a
    stable machine-readable form (the API's `reason`, one of `REASON_CODES` or the server's own refusals)."""

    def __init__(self, path: Path | str | BinaryIO, reason: str, code: str = "undecodable"):
        self.path = Path(path) if isinstance(path, (str, Path)) else Path("upload")
        self.reason = reason
        self.code = code
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # it travels back from DataLoader worker processes
        return type(self), (self.path, self.reason, self.code)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB the way the dataset was made; 16-bit and float images are scaled to 8 bits rather than clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES or img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        # 16-bit PNGs use the full 0..65535 range; float images are taken as 0..1 when they look like it.
        scale = 1.0 / 257.0 if arr.max(initial=0) > 255 else (255.0 if arr.max(initial=0) <= 1.0 else 1.0)
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")


def open_rgb(path: ImageSource, min_side: int = 1, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Fully decode `path` into an RGB image, or raise `ImageDecodeError` saying why not.

    `draft_size` lets JPEG decoding use DCT scaling down to no less than that size: the whole entropy stream
    is still read, so truncation is still detected. Decompression bombs are refused (see `unusable_reason`).
    """
    return decode_image(path, min_side, draft_size)[0]


def unusable(width: int, height: int, min_side: int) -> tuple[str, str] | None:
    """`unusable_reason`, with its code: (code, reason), or None for a usable size."""
    reason = unusable_reason(width, height, min_side)
    if reason is None:
        return None
    return ("decompression_bomb" if reason.startswith("too many pixels") else "too_small"), reason


def unusable_reason(width: int, height: int, min_side: int) -> str | None:
    """The project's one rule for a usable image, applied by the scan, the audit, eval, predict and serve alike:
    at most `Image.MAX_IMAGE_PIXELS` pixels (Pillow's bomb limit, compared here explicitly so that the answer
    never depends on process-wide warning filters) and a shorter side of at least `min_side`."""
    if width * height > Image.MAX_IMAGE_PIXELS:
        return f"too many pixels ({width}x{height}), refused as a decompression bomb"
    if min(width, height) < min_side:
        return f"too small ({width}x{height} px, data.min_image_side={min_side})"
    return None


ImageSource = Path | str | BinaryIO  # a file on disk, or an open binary file (the server's uploads)


@contextmanager
def opened(source: ImageSource) -> Iterator[Image.Image]:
    """The one gate every file passes on its way to a decoder: Pillow opens it as one of `ACCEPTED_FORMATS` or
    not at all, and whatever goes wrong, while opening or in the `with` block that reads it, leaves as an
    `ImageDecodeError` with its code. A decoder's own exception (Pillow's plugins raise NotImplementedError,
    struct.error, IndexError... on crafted headers) is `undecodable`: one file is refused, never a request, a
    prediction run or a training scan."""
    path = _name_of(source)
    if not isinstance(source, (str, Path)):
        source.seek(0)
    Image.init()  # every plugin registered: TIFF and WebP are not among Pillow's first few
    try:
        with Image.open(path if isinstance(source, (str, Path)) else source, formats=ACCEPTED_FORMATS) as img:
            yield img
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:  # more than twice the limit: Pillow refuses to open it at all
        raise ImageDecodeError(
            path, f"too many pixels, refused as a decompression bomb ({err})", "decompression_bomb"
        ) from None
    except Image.UnidentifiedImageError:
        raise _unidentified(source, path) from None
    except IsADirectoryError:
        raise ImageDecodeError(path, "a folder, not a file", "not_a_file") from None
    except PermissionError:
        raise ImageDecodeError(path, "permission denied: cannot read the file", "permission_denied") from None
    except FileNotFoundError:
        kind = "broken symbolic link" if path.is_symlink() else "file disappeared"
        raise ImageDecodeError(path, kind, "missing") from None
    except Exception as err:  # any decoder failure is this file's, with its reason
        truncated = "truncated" in str(err).lower()  # Pillow says so in its message only
        detail = str(err) or type(err).__name__
        raise ImageDecodeError(
            path, f"cannot be decoded ({detail})", "truncated" if truncated else "undecodable"
        ) from None


def _name_of(source: ImageSource) -> Path:
    """What messages call the file: its path, or an open file's own name ("upload" for an anonymous one)."""
    if isinstance(source, (str, Path)):
        return Path(source)
    name = getattr(source, "name", None)
    return Path(name) if isinstance(name, str) else Path("upload")


def _unidentified(source: ImageSource, path: Path) -> ImageDecodeError:
    """Why Pillow could not open a file as an accepted format: empty, another image format (named by its
    extension, or from its first bytes by Pillow's own signature checks, without running that format's parser), or
    not an image at all."""
    if isinstance(source, (str, Path)):
        with path.open("rb") as file:
            prefix = file.read(16)
    else:
        source.seek(0)
        prefix = source.read(16)
    if not prefix:
        return ImageDecodeError(path, "empty file", "empty")
    named = Image.registered_extensions().get(path.suffix.lower())
    if named in ACCEPTED_FORMATS:
        named = None  # a .jpg that is not a JPEG says nothing about what it is
    sniffed = (
        name
        for name, (_, accept) in Image.OPEN.items()
        if name not in ACCEPTED_FORMATS and accept is not None and _accepts(accept, prefix)
    )
    other = named or next(sniffed, None)
    if other is not None:
        formats = ", ".join(ACCEPTED_FORMATS)
        return ImageDecodeError(
            path,
            f"a {other} image, a format the project does not read: convert it to one of {formats}",
            "unsupported_format",
        )
    return ImageDecodeError(path, "not an image Pillow can identify", "not_an_image")


def _accepts(accept, prefix: bytes) -> bool:
    try:
        return bool(accept(prefix))
    except Exception:  # a signature check that fails on these bytes does not match them
        return False


def image_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) from the file's header, through the gate; nothing is decoded."""
    with opened(source) as img:
        return img.size


def decode_image(
    source: ImageSource, min_side: int = 1, draft_size: tuple[int, int] | None = None
) -> tuple[Image.Image, dict[str, Any]]:
    """`open_rgb`, plus what the file is: its format, mode and full-resolution width and height.

    `draft_size` may also be a callable of the full (width, height), returning the draft size or None."""
    with opened(source) as img:
        meta = {"format": img.format or "unknown", "mode": img.mode, "width": img.width, "height": img.height}
        refusal = unusable(img.width, img.height, min_side)
        if refusal is not None:
            raise ImageDecodeError(_name_of(source), refusal[1], refusal[0])
        size = draft_size(img.size) if callable(draft_size) else draft_size
        if size is not None and img.format == "JPEG":
            img.draft("RGB", size)
        img.load()
        rgb = to_rgb(img)
    return rgb, meta
