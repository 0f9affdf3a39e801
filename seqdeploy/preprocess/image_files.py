"""Image files -> uint8 pixel arrays: the one loader training and ``seqdeploy predict`` share.

The portable graph takes the resized uint8 pixels (a ``scale`` record with
``raw_dtype = "uint8"``); turning a file into those pixels happens here, with
Pillow, by the same calls at training and at predict time, so a file gives the
same pixels in both.

The rule, in order:

1. The file is decoded by Pillow (PNG, JPEG, BMP, GIF; a GIF's first frame).
   A file Pillow cannot read, a truncated file, or a file whose suffix is not an
   image suffix is a bad file, reported with its path.
2. EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo
   stored sideways with an orientation tag loads upright, as viewers show it.
3. Modes: 1-bit, greyscale ``L``, ``RGB`` and palette ``P`` load as they look
   (a palette is expanded to its colours). Images with transparency (``RGBA``,
   ``LA``, ``PA``, a palette with a transparent colour) are composited over a
   white background (``alpha = "white"``, the default: what an image viewer
   shows on a white page), black (``"black"``), or refused (``"error"``).
   CMYK, 16-bit and 32-bit (``I;16``, ``I``, ``F``) and other modes are refused
   with the conversion to make: their 8-bit RGB meaning depends on colour
   profiles or on a scaling the file does not state.
4. ``channels = 1`` converts to greyscale with Pillow's ITU-R 601-2 luma
   (``L = R * 299/1000 + G * 587/1000 + B * 114/1000``); ``channels = 3`` to RGB.
5. The image is resized to ``image_size`` with the recorded Pillow filter
   (``bilinear`` by default) unless it already has that size. Aspect ratio is
   not kept (as Keras ``image_dataset_from_directory`` does by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos", "box", "hamming")
ALPHA_MODES = ("white", "black", "error")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_OK_MODES = ("1", "L", "P", "RGB")
_ALPHA = ("RGBA", "LA", "PA")


class BadImage(Exception):
    """A file that is not a usable image: ``path`` and ``reason`` (what was found and how to fix it)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageLoader:
    """Read image files into uint8 ``(height, width)`` (channels 1) or ``(height, width, 3)`` arrays."""

    height: int
    width: int
    channels: int = 1
    resize: str = "bilinear"
    alpha: str = "white"

    @classmethod
    def from_scale(cls, pre: Any) -> "ImageLoader":
        """The loader a ``scale`` record for image files describes (None fields: defaults)."""
        shape = tuple(pre.raw_shape)
        return cls(int(shape[0]), int(shape[1]), 3 if len(shape) == 3 else 1, pre.resize or "bilinear",
                   pre.alpha or "white")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """One file's pixels, or :class:`BadImage` saying why not."""
        from PIL import Image, ImageOps, UnidentifiedImageError

        p = Path(path)
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise BadImage(p, f"not an image file (suffix {p.suffix or '(none)'!r}; expected one of "
                              f"{', '.join(IMAGE_SUFFIXES)})")
        try:
            with Image.open(p) as img:
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return self._pixels(p, img, Image)
        except UnidentifiedImageError:
            raise BadImage(p, "not a readable image (Pillow cannot identify it; the file is corrupt or not "
                              "an image)") from None
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or broken data
            raise BadImage(p, f"not a readable image ({str(exc).strip()[:120] or type(exc).__name__})") from None

    def _pixels(self, p: Path, img: Any, Image: Any) -> np.ndarray:
        mode = img.mode
        if mode == "P":
            mode_to = "RGBA" if "transparency" in img.info else "RGB"
            img, mode = img.convert(mode_to), mode_to
        if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            raise BadImage(p, f"colour mode {mode} (expected RGB, greyscale or palette); convert it to 8-bit RGB "
                              f"first, e.g. Pillow Image.open(f).convert('RGB').save(f)")
        if mode.startswith("I") or mode == "F":
            raise BadImage(p, f"mode {mode} ({'16' if ';16' in mode else '32'}-bit pixels; expected 8-bit); save it "
                              f"as 8-bit, e.g. scale it to 0..255 and convert it to 'L' or 'RGB'")
        if mode in _ALPHA:
            if self.alpha == "error":
                raise BadImage(p, f"mode {mode} has transparency (expected no alpha channel with alpha = 'error'); "
                                  f"flatten it, or set alpha = 'white' or 'black' to composite it over that colour")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255) if self.alpha == "white" else (0, 0, 0, 255))
            img, mode = Image.alpha_composite(bg, img.convert("RGBA")).convert("RGB"), "RGB"
        if mode not in _OK_MODES:
            raise BadImage(p, f"unexpected mode {mode} (expected 1-bit, L, P, RGB, or one with alpha); convert it "
                              f"to RGB first")
        img = img.convert("L" if self.channels == 1 else "RGB")
        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), resample=_filter(self.resize))
        arr = np.asarray(img, dtype=np.uint8)
        return arr.reshape(self.shape)


def _filter(name: str) -> Any:
    from PIL import Image

    return getattr(Image.Resampling, name.upper())


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every file under ``root`` (recursively, sorted), hidden files and folders left out."""
    root = Path(root)
    return [f for f in sorted(root.rglob("*")) if f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(root).parts)]


def class_folders(root: str | os.PathLike) -> list[tuple[str, list[Path]]]:
    """``[(class name, files)]`` for each subfolder of ``root``, sorted by name (the class id order)."""
    root = Path(root)
    return [(d.name, list_images(d)) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
