"""How fast the feature explorer redraws, against matplotlib, on the largest page.

The largest page is conv1 of ResNet34 on the cat photo: 64 channels of
112×112, a 914×914 picture. Each repetition times, interleaved so that both
see the same machine load:

* the explorer's redraw (``ExplorerState.render_page``: cached scaling,
  tiling, palette PNG), the path a slider move takes;
* matplotlib ``imshow`` + ``savefig`` (10×10 in, dpi 100, viridis) of the
  same page, from the same pre-scaled pixels;
* a plain PIL palette PNG at PIL's default compression, for reference.

Then, per layer, the bytes one redraw sends (first page of 64 channels): the
explorer's page (half size, enlarged by the browser; the smaller of lossless
PNG and a JPEG that fits 256 KiB) against the full-size palette PNG sent
before, with the median redraw time, over every scale × colormap the
explorer offers (the table shows the largest).

Targets (issue 4): median redraw ≤ 25 ms and ≥ 10× faster than matplotlib.
Targets (issue 12): every layer's page ≤ 256 KiB, each median redraw ≤ 25 ms.

Usage: python benchmarks/bench_explorer.py    (or call run() for the lines)
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TARGET_MS = 25.0
TARGET_RATIO = 10.0
TARGET_KIB = 256
MODES = [(normalize, cmap) for normalize in ("channel", "layer") for cmap in ("viridis", "gray", "RdBu_r")]


def _record_cat():
    from helpers.hooks import ActivationRecorder
    from helpers.images import load_image, preprocess, sample_image_path
    from helpers.models import load_resnet34, weights_info

    model = load_resnet34(device="cpu", progress=False)
    with ActivationRecorder(model) as recorder, torch.inference_mode():
        model(preprocess(load_image(sample_image_path())))
    return recorder, weights_info(model)


def _matplotlib_png(grid: np.ndarray) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 10), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _pil_default_png(grid: np.ndarray, palette: bytes) -> bytes:
    image = Image.fromarray(grid, mode="L").convert("P")
    image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return (time.perf_counter() - start) * 1000, result


def run(repeats: int = 9) -> list[str]:
    """Measure and return the result lines (also printed when run as a script)."""
    from helpers.viz import colormap_lut
    from helpers.explorer import ExplorerState, image_format, render_channel

    recorder, weights = _record_cat()
    conv1 = recorder["conv1"]
    deepest = recorder.names[-1]
    state = ExplorerState(recorder)
    grid = state.page_grid("conv1", 0, 64, "channel", False)
    palette = np.zeros((256, 3), np.uint8)
    palette[1:] = colormap_lut("viridis")[np.linspace(0, 255, 255).round().astype(int)]
    palette_bytes = palette.tobytes()

    cold, explorer, reference, pil, others, channel = [], [], [], [], {}, []
    _timed(_matplotlib_png, grid)  # warm-up: fonts, colormaps
    for _ in range(repeats):
        fresh = ExplorerState(recorder)
        cold.append(_timed(fresh.render_page, "conv1", 0, 64, "channel", "viridis")[0])
        ms, png = _timed(state.render_page, "conv1", 0, 64, "channel", "viridis")
        explorer.append(ms)
        reference.append(_timed(_matplotlib_png, grid)[0])
        pil.append(_timed(_pil_default_png, grid, palette_bytes)[0])
        for layer in ("layer1.0.conv1", "layer2.0.conv1", deepest):
            others.setdefault(layer, []).append(
                _timed(state.render_page, layer, 0, 64, "channel", "RdBu_r")[0])
        if len(channel) < 5:
            channel.append(_timed(render_channel, conv1, 3, "channel", "RdBu_r")[0])

    median = statistics.median
    ratio = median(reference) / median(explorer)
    size = Image.open(io.BytesIO(png)).size
    lines = [
        f"feature explorer redraw benchmark ({repeats} interleaved repetitions, "
        f"torch threads {torch.get_num_threads()}, weights: {'pretrained' if weights.pretrained else 'random'})",
        f"  explorer redraw, conv1 page 64×112×112 -> {size[0]}×{size[1]} px {image_format(png).upper()} "
        f"({len(png) // 1024} KiB): median {median(explorer):.1f} ms "
        f"(min {min(explorer):.1f}, max {max(explorer):.1f})",
        f"  matplotlib imshow + savefig, same page: median {median(reference):.1f} ms "
        f"(min {min(reference):.1f}, max {max(reference):.1f})",
        f"  plain PIL palette PNG, default compression, same page: median {median(pil):.1f} ms",
        f"  explorer first view of conv1 (scaling the layer, then cached): median {median(cold):.1f} ms",
    ]
    for layer, times in others.items():
        lines.append(f"  explorer redraw, {layer} page of 64 (RdBu_r): median {median(times):.1f} ms")
    lines += [
        f"  enlarged channel (matplotlib figure, once per channel choice): median {median(channel):.1f} ms",
        f"  ratio matplotlib / explorer: {ratio:.0f}x (target >= {TARGET_RATIO:.0f}x: "
        f"{'met' if ratio >= TARGET_RATIO else 'NOT MET'})",
        f"  median redraw target <= {TARGET_MS:.0f} ms: "
        f"{'met' if median(explorer) <= TARGET_MS else 'NOT MET'}",
    ]
    return lines + bytes_per_layer(recorder)[0]


def _full_size_png(state, layer: str, normalize: str, cmap: str) -> bytes:
    """The page as sent before issue 12: tiles enlarged in the kernel, palette PNG, level 0 up to 2× enlarging."""
    from helpers.explorer import _symmetric, encode_palette_png, upscale_factor
    from helpers.viz import tile_pages

    height, width = state.shape(layer)[1:]
    factor = upscale_factor(height, width, state.tile_px)
    tiles = state.indices(layer, normalize, _symmetric(cmap, None))[:64]
    return encode_palette_png(tile_pages(tiles, state.nrow, state.padding, factor), cmap,
                              0 if factor <= 2 else 1)


def bytes_per_layer(recorder, repeats: int = 5) -> tuple[list[str], bool]:
    """A table of bytes and times per redraw for every recorded layer; and whether all met the targets."""
    from helpers.explorer import ExplorerState, image_format

    state = ExplorerState(recorder)
    for normalize, cmap in MODES:
        state.warm(normalize, cmap == "RdBu_r")  # redraws, not first views: those scale the layer once
    lines = [f"  bytes per redraw, first page of 64, largest over {len(MODES)} scale × colormap choices:",
             f"  {'layer':<21} {'output':>12} {'sent px':>9} {'format':>6} {'KiB':>5} {'ms':>5}"
             f" {'before KiB':>10}"]
    worst_kib, worst_ms, total_now, total_before = 0.0, 0.0, 0, 0
    for layer in state.names:
        largest, times = None, []
        for normalize, cmap in MODES:
            for _ in range(repeats):
                ms, data = _timed(state.render_page, layer, 0, 64, normalize, cmap)
                times.append(ms)
            if largest is None or len(data) > len(largest[0]):
                largest = (data, normalize, cmap)
        data, normalize, cmap = largest
        before = len(_full_size_png(state, layer, normalize, cmap))
        height, width = state.page_pixels(layer, 0, 64)
        ms = statistics.median(times)
        channels, h, w = state.shape(layer)
        lines.append(f"  {layer:<21} {f'{channels}×{h}×{w}':>12} {f'{width}²':>9} {image_format(data):>6}"
                     f" {len(data) / 1024:5.0f} {ms:5.1f} {before / 1024:10.0f}")
        worst_kib, worst_ms = max(worst_kib, len(data) / 1024), max(worst_ms, ms)
        total_now, total_before = total_now + len(data), total_before + before
    met = worst_kib <= TARGET_KIB and worst_ms <= TARGET_MS
    lines += [
        f"  first pages of all {len(state)} layers: {total_now / 2**20:.1f} MiB (before: "
        f"{total_before / 2**20:.1f} MiB); largest page {worst_kib:.0f} KiB, slowest median redraw "
        f"{worst_ms:.1f} ms (targets <= {TARGET_KIB} KiB and <= {TARGET_MS:.0f} ms: "
        f"{'met' if met else 'NOT MET'})",
    ]
    return lines, met


if __name__ == "__main__":
    for line in run():
        print(line)
