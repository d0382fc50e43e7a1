"""Tests for helpers.images: safe loading, shrinking, image addresses, faithful RGB conversion, preprocessing."""

from __future__ import annotations

import io
import socket
import time
import warnings
from fractions import Fraction
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from torchvision.models import ResNet34_Weights, Weights, WeightsEnum
from torchvision.transforms import InterpolationMode

from helpers.images import (
    SHRINK_BYTES,
    ImageLoadError,
    download,
    is_url,
    load_image,
    preprocess,
    sample_image_path,
    to_displayable,
)

from tests.local_web import forwarding_proxy, serve

EXIF_ORIENTATION_TAG = 0x0112


def save(image: Image.Image, path: Path, **params) -> Path:
    """Save ``image`` to ``path`` and return the path."""
    image.save(path, **params)
    return path


def pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    """All pixels of a small RGB image, row by row."""
    return [tuple(int(v) for v in px) for px in np.asarray(image).reshape(-1, 3)]


def assert_close_colour(actual, expected, tolerance: int = 1) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected)), (actual, expected)


def load_error(source, **kwargs) -> ImageLoadError:
    """Load ``source``, expecting an ImageLoadError that hides PIL's traceback."""
    with pytest.raises(ImageLoadError) as excinfo:
        load_image(source, **kwargs)
    error = excinfo.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return error


# --- the shipped sample -------------------------------------------------------


def test_sample_image_loads_as_rgb_cat():
    path = sample_image_path()
    assert path.is_file()
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (451, 300)


def test_preprocess_sample_normalized_and_raw():
    image = load_image(sample_image_path())
    normalized = preprocess(image)
    raw = preprocess(image, normalize=False)
    for batch in (normalized, raw):
        assert batch.shape == (1, 3, 224, 224)
        assert batch.dtype == torch.float32
    assert abs(normalized.mean().item()) < 1
    assert normalized.min().item() < 0  # standardised, not just scaled
    assert 0 <= raw.min().item() and raw.max().item() <= 1


def test_to_displayable_inverts_normalisation():
    image = load_image(sample_image_path())
    shown = to_displayable(preprocess(image))
    expected = preprocess(image, normalize=False)[0].permute(1, 2, 0).numpy()
    assert shown.shape == (224, 224, 3)
    assert 0 <= shown.min() and shown.max() <= 1
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    np.testing.assert_allclose(to_displayable(preprocess(image)[0]), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 8, 8), (4, 8, 8), (3, 8)],
                         ids=["batch-of-2", "grey", "rgba", "no-width"])
def test_to_displayable_rejects_wrong_shape(shape):
    with pytest.raises(ValueError, match="3×H×W"):
        to_displayable(torch.zeros(shape))


def test_to_displayable_of_zeros_is_the_mean_colour_in_h_w_c_order():
    shown = to_displayable(torch.zeros(1, 3, 2, 5))  # a normalised 0 is the ImageNet mean colour
    assert shown.shape == (2, 5, 3) and shown.dtype == np.float32
    np.testing.assert_allclose(shown, np.broadcast_to([0.485, 0.456, 0.406], (2, 5, 3)), atol=1e-7)


class OddPreset(WeightsEnum):
    """Weights whose preset differs from ResNet34's in everything ``normalize=False`` copies."""

    BICUBIC = Weights(
        url="https://example.org/none.pth",  # never downloaded: only the preset is used
        transforms=partial(ResNet34_Weights.IMAGENET1K_V1.transforms, resize_size=240, crop_size=200,
                           interpolation=InterpolationMode.BICUBIC, antialias=False),
        meta={},
    )


def test_unnormalised_preprocess_resizes_and_crops_as_the_weights_preset_does():
    noise = np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    image = Image.fromarray(noise)  # noise: bicubic and bilinear resizing differ by far more than 1e-5
    with pytest.warns(UserWarning, match="antialias") as normalised_warnings:
        normalized = preprocess(image, weights=OddPreset.BICUBIC)
    with pytest.warns(UserWarning, match="antialias") as raw_warnings:
        raw = preprocess(image, normalize=False, weights=OddPreset.BICUBIC)
    # the same preset, hence the same warning: PIL always antialiases, torchvision says so when asked not to
    assert [str(w.message) for w in raw_warnings] == [str(w.message) for w in normalised_warnings]
    assert raw.shape == normalized.shape == (1, 3, 200, 200) and raw.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(raw, normalized * std + mean, atol=1e-5, rtol=0)


def test_preprocess_rejects_a_path_with_a_hint():
    with pytest.raises(TypeError, match="load_image"):
        preprocess(str(sample_image_path()))


# --- bad inputs ---------------------------------------------------------------


def test_missing_file(tmp_path):
    error = load_error(tmp_path / "ghost.png")
    assert "ghost.png" in str(error) and "not found" in str(error)


def test_directory(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    error = load_error(folder)
    assert "photos" in str(error) and "directory" in str(error)


def test_text_file_renamed_jpg(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a picture\n")
    error = load_error(fake)
    assert "notes.jpg" in str(error) and "not an image" in str(error)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    error = load_error(empty)
    assert "empty.png" in str(error) and "empty (0 bytes)" in str(error)


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_image(tmp_path, fmt, suffix):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = save(Image.fromarray(noise), tmp_path / f"cut.{suffix}", format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    error = load_error(path)
    assert f"cut.{suffix}' is truncated" in str(error)


@pytest.mark.parametrize("limit_factor", [1.5, 2.5], ids=["warning-range", "error-range"])
def test_decompression_bomb(tmp_path, monkeypatch, limit_factor):
    # 300×300 = 90,000 pixels: PIL warns above the limit and refuses above twice it.
    path = save(Image.new("1", (300, 300)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(300 * 300 / limit_factor))
    error = load_error(path)
    assert "bomb.png" in str(error) and "too large" in str(error)


def test_bytes_input_and_bad_bytes_name_the_upload(tmp_path):
    path = save(Image.new("RGB", (5, 4), (10, 200, 30)), tmp_path / "ok.png")
    for data in (path.read_bytes(), memoryview(path.read_bytes())):
        image = load_image(data, name="ok.png")
        assert image.mode == "RGB" and image.size == (5, 4)
        assert pixels(image)[0] == (10, 200, 30)
    error = load_error(b"GIF89a but not really", name="upload.gif")
    assert "upload.gif" in str(error) and "not an image" in str(error)
    assert "'uploaded image' is not an image" in str(load_error(b"GIF89a but not really"))  # no name given
    empty_upload = str(load_error(b"", name="upload.gif"))
    assert "upload.gif" in empty_upload and "empty (0 bytes)" in empty_upload


# --- unusual but valid images -------------------------------------------------


@pytest.mark.parametrize("dtype, mode", [("<u2", "I;16"), (">u2", "I;16B")])
def test_sixteen_bit_is_rescaled_not_clipped(tmp_path, dtype, mode):
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=dtype))
    assert image.mode == mode
    path = save(image, tmp_path / "deep.tif")
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (3, 1)
    assert [px[0] for px in pixels(loaded)] == [0, 128, 255]


def test_sixteen_bit_png(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert [px[0] for px in pixels(load_image(path))] == [0, 128, 255]


def test_32bit_integer_and_float_images_are_rescaled(tmp_path):
    # Old Pillow opens 16-bit PNGs as "I", so values within 0..65535 are read as 16-bit.
    in_16bit_range = Image.fromarray(np.array([[0, 32768]], dtype=np.int32))
    assert [px[0] for px in pixels(load_image(save(in_16bit_range, tmp_path / "i.tif")))] == [
        0,
        128,
    ]
    signed = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32))
    assert [px[0] for px in pixels(load_image(save(signed, tmp_path / "s.tif")))] == [0, 128, 255]
    unit_float = Image.fromarray(np.array([[0.25, 0.5]], dtype=np.float32))
    assert [px[0] for px in pixels(load_image(save(unit_float, tmp_path / "f.tif")))] == [64, 128]
    wide_float = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32))
    assert [px[0] for px in pixels(load_image(save(wide_float, tmp_path / "w.tif")))] == [
        0,
        128,
        255,
    ]


def grey_levels(values: np.ndarray) -> list[int]:
    """The grey levels load_image gives a one-row greyscale TIFF of ``values`` (int32: mode I, float32: F)."""
    buffer = io.BytesIO()
    Image.fromarray(values[None, :]).save(buffer, format="TIFF")
    return [px[0] for px in pixels(load_image(buffer.getvalue(), name="deep.tif"))]


@pytest.mark.parametrize(
    "values, levels",
    [
        (np.array([257, 65535], np.int32), [1, 255]),  # within 0..65535: read as 16-bit, 65535 included
        (np.array([257, 65536], np.int32), [0, 255]),  # one above: min–max stretched
        (np.array([0.0, 0.75], np.float32), [0, 191]),  # within 0..1, 0 included: × 255 (191.25)
        (np.array([0.25, 1.0], np.float32), [64, 255]),  # within 0..1, 1 included
        (np.array([0.5, 2.0], np.float32), [0, 255]),  # above 1: min–max stretched
        (np.array([-1.0, 0.5, 1.0], np.float32), [0, 191, 255]),  # below 0: min–max (1.5 / 2 · 255 = 191.25)
    ],
    ids=["I-65535", "I-65536", "F-from-0", "F-to-1", "F-to-2", "F-signed"],
)
def test_deep_greyscale_levels_by_hand(values, levels):
    assert grey_levels(values) == levels


def test_float_pixels_are_scaled_in_double_precision():
    # float32 nearest to (k + 0.5) / 255 lies just above it: exactly k + 0.5000000x grey levels, so k + 1.
    # In float32 arithmetic the product rounds to k + 0.5 and then to the even k.
    values = np.array([(k + 0.5) / 255 for k in (0, 2, 4)], np.float32)
    exact = [Fraction(float(v)) * 255 for v in values]
    assert all(e - int(e) > Fraction(1, 2) for e in exact)
    assert grey_levels(values) == [round(e) for e in exact] == [1, 3, 5]


@pytest.mark.filterwarnings("error")  # numpy warns on 0/0 before NaN is cast away
def test_constant_float_image_gives_no_nan(tmp_path):
    flat = Image.fromarray(np.full((2, 2), 7.0, dtype=np.float32))
    loaded = load_image(save(flat, tmp_path / "flat.tif"))
    assert loaded.mode == "RGB" and loaded.size == (2, 2)
    assert torch.isfinite(preprocess(loaded)).all()


@pytest.mark.parametrize("mode, white, black", [("L", 255, 0), ("1", 1, 0)])
def test_grayscale_and_bilevel(tmp_path, mode, white, black):
    image = Image.new(mode, (2, 1), black)
    image.putpixel((0, 0), white)
    loaded = load_image(save(image, tmp_path / f"gray_{mode}.png"))
    assert loaded.mode == "RGB" and loaded.size == (2, 1)
    assert pixels(loaded) == [(255, 255, 255), (0, 0, 0)]


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red, index 1 blue
    image.putpixel((1, 0), 1)
    for suffix in ("png", "gif"):
        path = save(image, tmp_path / f"palette.{suffix}", transparency=1)
        assert pixels(load_image(path)) == [(255, 0, 0), (255, 255, 255)]


@pytest.mark.parametrize(
    "mode, opaque, transparent",
    [
        ("RGBA", (0, 128, 0, 255), (0, 0, 0, 0)),
        ("LA", (60, 255), (0, 0)),
    ],
)
def test_alpha_composited_over_white(tmp_path, mode, opaque, transparent):
    image = Image.new(mode, (2, 1), transparent)
    image.putpixel((0, 0), opaque)
    loaded = load_image(save(image, tmp_path / f"alpha_{mode}.png"))
    expected_opaque = opaque[:3] if mode == "RGBA" else (opaque[0],) * 3
    assert pixels(loaded) == [expected_opaque, (255, 255, 255)]


def test_rgb_png_with_a_transparent_colour_is_white_there():
    image = Image.new("RGB", (2, 1), (0, 0, 0))
    image.putpixel((1, 0), (10, 200, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=(0, 0, 0))  # a tRNS colour key: black is transparent
    assert pixels(load_image(buffer.getvalue(), name="key.png")) == [(255, 255, 255), (10, 200, 30)]


def test_half_transparent_pixel_is_blended_with_white(tmp_path):
    image = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    loaded = load_image(save(image, tmp_path / "half.png"))
    assert_close_colour(pixels(loaded)[0], (127, 127, 127))


def test_premultiplied_grey_alpha_is_composited_over_white_too():
    # "La" is grey 200 at alpha 128, stored premultiplied (100); Pillow converts it only to "LA".
    image = Image.new("LA", (3, 2), (200, 128)).convert("La")
    assert image.mode == "La" and image.getpixel((0, 0)) == (100, 128)
    raw = preprocess(image, normalize=False)
    # 200 · 128/255 + 255 · 127/255 = 227.4: half grey, half white background
    np.testing.assert_allclose(raw.numpy(), 227 / 255, atol=1.5 / 255)


def test_preprocess_converts_non_rgb_images_too():
    # PIL cannot write "PA" files, so build one in memory: transparent red → white.
    image = Image.new("PA", (8, 8), (0, 0))
    image.putpalette([255, 0, 0])
    raw = preprocess(image, normalize=False)
    assert raw.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(raw.numpy(), 1.0)


def test_cmyk_jpeg_red_stays_red(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    red, green, blue = pixels(load_image(path))[8 * 16 + 8]
    assert red > 200 and green < 60 and blue < 60


def test_first_frame_of_animated_gif(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ("red", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (4, 4)
    assert pixels(loaded)[0] == (255, 0, 0)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    path = save(Image.new("RGB", (40, 20), "red"), tmp_path / "phone.jpg", exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("size", [(1, 1), (4000, 50)], ids=["1x1", "panorama"])
def test_extreme_sizes_work_through_preprocess(tmp_path, size):
    path = save(Image.new("RGB", size, (200, 10, 10)), tmp_path / "odd.png")
    loaded = load_image(path)
    assert loaded.size == size
    raw = preprocess(loaded, normalize=False)
    assert raw.shape == (1, 3, 224, 224)
    centre = raw[0, :, 112, 112].numpy()
    np.testing.assert_allclose(centre, np.array([200, 10, 10]) / 255, atol=1e-3)


# --- large photos are shrunk while decoding ------------------------------------


def noisy_photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A photo-like picture that JPEG cannot squeeze: a ramp with noise (~1 byte per pixel at q95)."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(ramp + rng.normal(0, 50, ramp.shape), 0, 255).astype(np.uint8))


def test_a_large_photo_is_shrunk_to_max_side_upright(tmp_path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # a phone held upright: stored landscape, shown portrait
    path = save(noisy_photo((2400, 1600)), tmp_path / "phone.jpg", quality=95, exif=exif)
    assert path.stat().st_size > SHRINK_BYTES
    loaded = load_image(path)
    assert loaded.size == (683, 1024)  # 1600×2400 upright, fitted into 1024×1024
    assert load_image(path.read_bytes(), name="phone.jpg").size == (683, 1024)
    assert load_image(path, max_side=None).size == (1600, 2400)
    # the shrunk photo shows the same picture: the ramp runs top to bottom after the rotation
    column = np.asarray(loaded, dtype=float).mean(axis=(1, 2))
    assert column[:100].mean() < 60 and column[-100:].mean() > 195


def test_a_small_file_keeps_its_pixels_even_when_wide(tmp_path):
    path = save(Image.new("RGB", (3000, 2000), (10, 200, 30)), tmp_path / "flat.png")
    assert path.stat().st_size < SHRINK_BYTES
    assert load_image(path).size == (3000, 2000)


def png_of_size(n_bytes: int) -> bytes:
    """A 1100×8 PNG padded with a text chunk to exactly ``n_bytes``."""
    image = Image.new("RGB", (1100, 8), (10, 200, 30))

    def encoded(padding: int) -> bytes:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "x" * padding)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()

    data = encoded(n_bytes - len(encoded(0)))  # a tEXt chunk grows byte for byte
    assert len(data) == n_bytes
    return data


def test_only_files_over_shrink_bytes_are_shrunk():
    assert load_image(png_of_size(SHRINK_BYTES)).size == (1100, 8)
    assert load_image(png_of_size(SHRINK_BYTES + 1)).size == (1024, 7)  # 8 · 1024 / 1100 = 7.4


@lru_cache(maxsize=1)
def blocks_jpeg() -> tuple[np.ndarray, bytes]:
    """128×128 random colours, each an 8×8 block of a 1024×1024 JPEG (with light noise: over SHRINK_BYTES)."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (128, 128, 3)).astype(np.uint8)
    photo = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1) + rng.normal(0, 3, (1024, 1024, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=100, subsampling=0)
    assert len(buffer.getvalue()) > SHRINK_BYTES
    return blocks, buffer.getvalue()


def test_a_large_jpeg_is_decoded_at_reduced_scale():
    # Shrunk to 128 pixels a side, the JPEG decoder's 1/8 scale gives each 8×8 block its mean: the block
    # colour. Decoding in full and resampling instead would blur neighbouring blocks into each other
    # (errors of tens of levels).
    blocks, data = blocks_jpeg()
    loaded = load_image(data, name="blocks.jpg", max_side=128)
    assert loaded.size == (128, 128)
    assert np.abs(np.asarray(loaded, dtype=int) - blocks).max() <= 4


def test_a_large_png_is_shrunk_with_lanczos():
    noise = np.random.default_rng(0).integers(0, 256, (800, 1100, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG", compress_level=1)
    assert len(buffer.getvalue()) > SHRINK_BYTES
    expected = Image.fromarray(noise)
    expected.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    loaded = load_image(buffer.getvalue(), name="noise.png")
    assert loaded.size == expected.size == (1024, 745)
    assert np.array_equal(np.asarray(loaded), np.asarray(expected))


def test_a_photo_with_damaged_exif_still_loads():
    exif = Image.Exif()
    exif[0x010E] = "a long image description " * 8  # ImageDescription
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (250, 20, 10)).save(buffer, format="JPEG", exif=exif.tobytes()[:-60])  # cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_image(buffer.getvalue(), name="damaged-exif.jpg")
    assert caught, "PIL should warn about the damaged EXIF (a warning, not an error)"
    assert loaded.size == (16, 8)
    assert_close_colour(pixels(loaded)[0], (250, 20, 10), tolerance=4)


# --- image addresses, downloaded in the kernel -----------------------------------


@pytest.fixture
def web(monkeypatch):
    """An HTTP server on 127.0.0.1 serving a photo, a web page and large files; yields its base URL."""
    monkeypatch.setenv("no_proxy", "*")  # a proxy set on this machine must not see 127.0.0.1
    photo = io.BytesIO()
    Image.new("RGB", (30, 20), (250, 20, 10)).save(photo, format="PNG")
    routes = {
        "/cat.png": ("image/png", photo.getvalue()),
        "/photo": ("application/octet-stream", photo.getvalue()),  # some servers say nothing useful
        "/page.html": ("text/html; charset=utf-8", b"<!doctype html><html><body><img src='cat.png'></body></html>"),
        "/big.png": ("image/png", bytes(3 * 2**20)),
        "/no-length-big.png": ("image/png", bytes(3 * 2**20)),
        "/junk.png": ("image/png", b"\x00\x01 this is no picture" * 50),
        "/junk.bin": ("application/octet-stream", b"\x00\x01 this is no picture" * 50),
        # Text that a content type other than image/* announces, each sniffed as a page:
        "/page-utf16.html": ("text/html; charset=utf-16le",
                             "<!doctype html><html><body>No cat</body></html>".encode("utf-16-le")),
        "/error-utf16.json": ("application/json; charset=utf-16le", '{"error": "gone"}'.encode("utf-16-le")),
        "/list-utf16.json": ("application/json; charset=utf-16le", '["cat.png"]'.encode("utf-16-le")),
        "/spaced.html": ("text/html", b"\r\n  <!doctype html><p>stray \x00 byte</p>"),
        "/denied.txt": ("text/plain", b"Access denied\n"),
        "/late-nul.txt": ("text/plain", b"x" * 512 + b"\x00 binary after the first 512 bytes"),
        "/blocks.jpg": ("image/jpeg", blocks_jpeg()[1]),
    }
    with serve(routes) as base:
        yield base


def test_a_large_download_is_shrunk_like_a_large_file(web):
    assert load_image(f"{web}/blocks.jpg").size == (1024, 1024)  # at MAX_SIDE already
    assert load_image(f"{web}/blocks.jpg", max_side=128).size == (128, 128)
    assert load_image(f"{web}/blocks.jpg", max_side=1000).size == (1000, 1000)


def test_an_image_address_is_downloaded_and_decoded(web):
    image = load_image(f"{web}/cat.png")
    assert image.size == (30, 20) and pixels(image)[0] == (250, 20, 10)
    assert load_image(f"{web}/photo").size == (30, 20)  # the bytes decide, not the content type
    assert download(f"  {web}/cat.png ").startswith(b"\x89PNG")


def test_a_web_page_instead_of_an_image_says_copy_image_address(web):
    error = load_error(f"{web}/page.html")
    assert "not an image" in str(error) and "text/html" in str(error) and "Copy image address" in str(error)


TEXT_INSTEAD_OF_AN_IMAGE = {  # path: content type; each is sniffed as text, not decoded
    "/page-utf16.html": "text/html",  # starts with "<"; UTF-16 text is full of 0 bytes
    "/error-utf16.json": "application/json",  # starts with "{"
    "/list-utf16.json": "application/json",  # starts with "["
    "/spaced.html": "text/html",  # "<" after blank space, and a 0 byte
    "/denied.txt": "text/plain",  # no markup, but no 0 byte either
    "/late-nul.txt": "text/plain",  # the first 0 byte is past the 512 that are looked at
}


def test_text_sent_instead_of_an_image_says_copy_image_address(web):
    for path, kind in TEXT_INSTEAD_OF_AN_IMAGE.items():  # one server for all: its shutdown takes 0.5 s
        error = str(load_error(f"{web}{path}"))
        assert f"is not an image: the server sent {kind}" in error and "Copy image address" in error, path


def test_bytes_that_are_no_image_name_the_address(web):
    assert f"'{web}/junk.png' is not an image PIL can read" in str(load_error(f"{web}/junk.png"))
    assert "'junk.png' is not an image PIL can read" in str(load_error(f"{web}/junk.png", name="junk.png"))
    # binary (a 0 byte among the first 512) under a vague content type: decoded, and PIL says no
    assert "not an image PIL can read" in str(load_error(f"{web}/junk.bin"))


@pytest.mark.parametrize("path", ["/big.png", "/no-length-big.png"], ids=["announced", "streamed"])
def test_an_oversized_download_stops_at_the_cap(web, path):
    start = time.monotonic()
    error = load_error(f"{web}{path}", max_bytes=2**20)
    assert "too big" in str(error) and "limit is 1 MB" in str(error)
    assert ("3.0 MB" in str(error)) == (path == "/big.png")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("path", ["/stall", "/trickle"])
def test_a_stalled_server_times_out(web, path):
    start = time.monotonic()
    error = load_error(f"{web}{path}", timeout=0.8)
    assert "within 0.8 s" in str(error)
    assert time.monotonic() - start < 2.5


def test_offline_or_unreachable_and_http_errors_say_so(web):
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    error = load_error(f"http://127.0.0.1:{closed}/cat.png", timeout=2)
    assert "could not be reached" in str(error) and "offline" in str(error)
    assert "404" in str(load_error(f"{web}/missing.png"))


def test_an_address_goes_through_the_proxy_set_now_not_at_the_first_download(web, monkeypatch):
    assert download(f"{web}/cat.png").startswith(b"\x89PNG")  # a first download, without a proxy
    with forwarding_proxy() as (proxy_url, requested):
        for variable in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("http_proxy", proxy_url)
        image = load_image(f"{web}/cat.png")
    assert requested == [f"{web}/cat.png"]
    assert image.size == (30, 20) and pixels(image)[0] == (250, 20, 10)


def test_is_url_takes_http_and_https_in_any_case_and_blank_space():
    for text in ("http://example.org/cat.jpg", "https://example.org/cat.jpg", "  HTTPS://Example.org/a.png\n"):
        assert is_url(text), text
    for text in ("ftp://example.org/cat.jpg", "cat.png", "notebooks/https/cat.png", "httpss://x"):
        assert not is_url(text), text


def test_not_a_url_or_path():
    with pytest.raises(TypeError, match="path, an http"):
        load_image(42)
    with pytest.raises(ImageLoadError, match="not an http"):
        download("ftp://example.org/cat.png")
