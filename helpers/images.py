"""Load photos safely and turn them into ResNet inputs (and back again for display).

Photos come from a path, the bytes of an upload, or an http(s) address (downloaded in the
kernel, with a timeout and a size cap). Files over ``SHRINK_BYTES`` (phone photos) are
reduced while they are decoded, to at most ``MAX_SIDE`` pixels a side: the network sees a
224-pixel crop anyway, and a 12-megapixel photo would otherwise take ~40 MB of memory.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.models import ResNet34_Weights, WeightsEnum
from torchvision.transforms import functional as F

ImageSource = Union[str, os.PathLike[str], bytes, bytearray, memoryview]

DEFAULT_WEIGHTS = ResNet34_Weights.IMAGENET1K_V1
WHITE = (255, 255, 255, 255)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Modes whose pixels can be partly transparent; palette and L/RGB images may also
# carry transparency in image.info, which has_transparency_data covers.
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Photos larger than this many bytes are shrunk while decoding, to MAX_SIDE pixels a side.
SHRINK_BYTES = 1_000_000
MAX_SIDE = 1024
# Downloads: give up after this many seconds in all, or beyond this many bytes.
URL_TIMEOUT_S = 20.0
MAX_DOWNLOAD_BYTES = 25 * 2**20
# PIL decoders signal broken files with a zoo of exception types.
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, struct.error)


class ImageLoadError(ValueError):
    """An image file or upload could not be turned into an RGB picture."""


def sample_image_path() -> Path:
    """Return the path of the shipped cat photo (Chelsea, CC0, 451×300)."""
    return Path(__file__).resolve().parent.parent / "notebooks" / "assets" / "cat.png"


def load_image(source: ImageSource, name: str | None = None, *, max_side: int | None = MAX_SIDE,
               timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Image.Image:
    """Load a path, raw bytes or an http(s) URL as a fully decoded RGB image, upright per its EXIF.

    ``source`` is a file path, the bytes of an upload (ipywidgets ``FileUpload``
    gives ``bytes`` or ``memoryview``), or an image address ``https://...``,
    downloaded here within ``timeout`` seconds and ``max_bytes``; ``name``
    labels it in error messages. Files over ``SHRINK_BYTES`` are shrunk while
    decoding to at most ``max_side`` pixels a side (``None``: never).
    Multi-frame images (GIF, TIFF) give their first frame. Every failure raises
    ``ImageLoadError`` with a message that names the file and says what to do.
    """
    if isinstance(source, str) and is_url(source):
        data = download(source, timeout=timeout, max_bytes=max_bytes)
        return load_image(data, name=name or source, max_side=max_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "uploaded image"
        data = bytes(source)
        if not data:
            raise ImageLoadError(f"'{label}' is empty (0 bytes). Upload the image file again.")
        return _to_rgb(_decode(io.BytesIO(data), label, _limit(len(data), max_side)), label)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"load_image() takes a file path, an http(s) URL or bytes, not {type(source).__name__}."
        )

    path = Path(source).expanduser()
    label = name or str(path)
    _check_readable_file(path, label)
    try:
        with path.open("rb") as file:
            image = _decode(file, label, _limit(path.stat().st_size, max_side))
    except PermissionError:
        raise ImageLoadError(
            f"'{label}' cannot be read: permission denied. Copy it somewhere you can read."
        ) from None
    return _to_rgb(image, label)


def _limit(n_bytes: int, max_side: int | None) -> int | None:
    """The longest side to shrink to while decoding, for a file of ``n_bytes``."""
    return max_side if max_side is not None and n_bytes > SHRINK_BYTES else None


def is_url(text: str) -> bool:
    """True for an http:// or https:// address."""
    return text.strip().lower().startswith(("http://", "https://"))


def download(url: str, timeout: float = URL_TIMEOUT_S, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:  # pragma: no mutate block (network I/O: tests/test_images.py drives it through local servers and real timeouts, seconds per mutant)
    """The bytes at an http(s) URL, within ``timeout`` seconds in all and ``max_bytes``.

    Raises ``ImageLoadError`` that says what went wrong (offline, timeout, too
    big, an HTTP error, a web page instead of an image) and what to do.
    Proxies come from the usual environment variables (``https_proxy``...).
    """
    url = url.strip()
    if not is_url(url):
        raise ImageLoadError(f"'{url}' is not an http:// or https:// address.")
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "cnn-hooks-lab (image download)",
                                                   "Accept": "image/*"})
    try:
        # A new opener reads the proxy variables now; urlopen's global one keeps those of its first use.
        with urllib.request.build_opener().open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ImageLoadError(_too_big(url, int(length), max_bytes))
            kind = response.headers.get_content_type()
            chunks, total = [], 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                _set_read_timeout(response, remaining)
                chunk = response.read1(min(2**16, max_bytes + 1 - total))  # what has arrived: no waiting for more
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise ImageLoadError(_too_big(url, None, max_bytes))
    except ImageLoadError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageLoadError(
            f"'{url}' could not be downloaded: the server answered {exc.code} {exc.reason}. "
            "Check the address (open it in a browser tab)."
        ) from None
    except (TimeoutError, socket.timeout):
        raise ImageLoadError(
            f"'{url}' did not arrive within {timeout:g} s: the server is slow or stalled. "
            "Try again, or download the image and upload the file."
        ) from None
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise ImageLoadError(
                f"'{url}' did not answer within {timeout:g} s: the server is slow or stalled. "
                "Try again, or download the image and upload the file."
            ) from None
        raise ImageLoadError(
            f"'{url}' could not be reached ({reason}). Are you offline, or is the address wrong? "
            "Without internet, upload the file or give a path instead."
        ) from None
    data = b"".join(chunks)
    if not data:
        raise ImageLoadError(f"'{url}' sent an empty file (0 bytes). Check the address.")
    if not kind.startswith("image/") and _looks_like_text(data):
        raise ImageLoadError(
            f"'{url}' is not an image: the server sent {kind}. That is probably the web page "
            "around the picture: right-click the picture and choose 'Copy image address'."
        )
    return data


def _set_read_timeout(response, seconds: float) -> None:  # pragma: no mutate block (socket timeouts: see download)
    """Bound the next read by the time left, so a server that trickles bytes cannot stall us."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _looks_like_text(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<", b"{", b"[")) or b"\0" not in data[:512]


def _too_big(url: str, size: int | None, max_bytes: int) -> str:  # pragma: no mutate block (download's message text: see download)
    size_text = f"{size / 2**20:.1f} MB" if size is not None else f"over {max_bytes / 2**20:.0f} MB"
    return (f"'{url}' is too big to download: {size_text}, the limit is {max_bytes / 2**20:.0f} MB. "
            "Pick a smaller version of the image (most sites offer one).")


def preprocess(
    image: Image.Image, normalize: bool = True, weights: WeightsEnum | None = None
) -> torch.Tensor:
    """Turn a PIL image into the 1×3×224×224 float batch the pretrained ResNet expects.

    Uses the weights' own preset (``weights.transforms()``: resize to 256, centre-crop
    224, scale to [0, 1], standardise with the ImageNet mean/std).

    Normalisation matters: the network was trained on inputs standardised with the
    ImageNet mean and std, so its first-layer filters expect roughly zero-centred
    values. Raw [0, 1] inputs shift every first-layer activation and everything
    after it (the original blog post this project improves used only
    Resize + ToTensor). ``normalize=False`` applies the same resize and crop but
    keeps values in [0, 1], to show what normalisation changes.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"preprocess() takes a PIL image, not {type(image).__name__}. "
            "Call load_image(path_or_bytes) first."
        )
    image = _to_rgb(image, "image")
    preset = (weights or DEFAULT_WEIGHTS).transforms()
    if normalize:
        return preset(image).unsqueeze(0)
    resized = F.resize(
        image, preset.resize_size, interpolation=preset.interpolation, antialias=preset.antialias
    )
    cropped = F.center_crop(resized, preset.crop_size)
    return F.convert_image_dtype(F.pil_to_tensor(cropped), torch.float32).unsqueeze(0)


def to_displayable(tensor: torch.Tensor, weights: WeightsEnum | None = None) -> np.ndarray:
    """Undo the normalisation of a 1×3×H×W or 3×H×W tensor; return H×W×3 floats in [0, 1]."""
    pixels = tensor.detach().cpu().float()
    if pixels.dim() == 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(
            "to_displayable() needs a 1×3×H×W or 3×H×W tensor, "
            f"got shape {tuple(tensor.shape)}."
        )
    preset = (weights or DEFAULT_WEIGHTS).transforms()
    mean = torch.tensor(preset.mean).view(3, 1, 1)
    std = torch.tensor(preset.std).view(3, 1, 1)
    return (pixels * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _check_readable_file(path: Path, label: str) -> None:
    """Raise ImageLoadError unless ``path`` is an existing, non-empty regular file."""
    if not path.exists():
        raise ImageLoadError(
            f"Image file not found: '{label}'. Check the spelling; relative paths "
            f"start from the current folder ({Path.cwd()})."
        )
    if path.is_dir():
        raise ImageLoadError(
            f"'{label}' is a directory, not an image file. Pass the path of a file inside it."
        )
    if path.stat().st_size == 0:
        raise ImageLoadError(f"'{label}' is empty (0 bytes). Download or export the image again.")


def _decode(file: BinaryIO, label: str, max_side: int | None = None) -> Image.Image:
    """Decode the first frame completely, applying EXIF orientation; errors name ``label``.

    With ``max_side`` the image is shrunk to fit max_side × max_side while it is
    decoded: JPEGs decode directly at 1/2, 1/4 or 1/8 scale (``draft``), then
    ``thumbnail`` resamples the rest.
    """
    with warnings.catch_warnings():
        # Between 1× and 2× MAX_IMAGE_PIXELS PIL only warns; treat that as too large too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as image:  # opens on the first frame of a GIF/TIFF
                if max_side is not None and max(image.size) > max_side:
                    if image.format == "JPEG":  # before any decoding; keeps at least max_side
                        image.draft("RGB", (max_side, max_side))
                    image.load()  # inside the try: truncation only shows up while decoding
                    image = ImageOps.exif_transpose(image)
                    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                    return image
                image.load()
                return ImageOps.exif_transpose(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageLoadError(
                f"'{label}' is too large to decode safely: it has more than "
                f"{Image.MAX_IMAGE_PIXELS:,} pixels (PIL's decompression-bomb limit). "
                "Shrink it to a few megapixels in an image editor first."
            ) from None
        except UnidentifiedImageError:
            raise ImageLoadError(
                f"'{label}' is not an image PIL can read (unrecognised file format). "
                "Use a PNG, JPEG, GIF, BMP, TIFF or WebP file."
            ) from None
        except DECODER_ERRORS as exc:
            if "truncated" in str(exc):
                raise ImageLoadError(
                    f"'{label}' is truncated: the file ends before the image data does. "
                    "Download or export it again."
                ) from None
            raise ImageLoadError(
                f"'{label}' is damaged and could not be decoded ({type(exc).__name__}: {exc}). "
                "Re-export it as PNG or JPEG."
            ) from None


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping or garbage under transparency."""
    if image.mode == "RGB" and not image.has_transparency_data:  # an RGB PNG may name a transparent colour
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return Image.fromarray(_rescale_to_uint8(image)).convert("RGB")
    if image.mode in ALPHA_MODES or image.has_transparency_data:
        # Transparent pixels hold arbitrary RGB (often black); white matches how
        # viewers and browsers usually show them, so the network sees that picture.
        if image.mode == "La":  # premultiplied alpha: Pillow converts it to LA only
            image = image.convert("LA")
        background = Image.new("RGBA", image.size, WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    try:
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    except ValueError:
        raise ImageLoadError(
            f"'{label}' uses colour mode {image.mode}, which cannot be converted to RGB. "
            "Re-export it as an RGB PNG or JPEG."
        ) from None


def _rescale_to_uint8(image: Image.Image) -> np.ndarray:
    """Map a 16-bit, 32-bit integer or float greyscale image onto 0..255.

    PIL's own ``convert("L")`` clips these to 255, giving a white picture.
    - 16-bit modes: 0..65535 → 0..255 (divide by 257).
    - ``I`` whose values fit in 0..65535: treated as 16-bit, because older Pillow
      versions open 16-bit PNGs as ``I``; other ``I`` images are min–max stretched.
    - ``F`` within 0..1: scaled by 255 (the usual float convention); otherwise min–max.
    A constant image that needs min–max stretching becomes black (no contrast to stretch).
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) / ((high - low) or 1.0) * 255.0
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
