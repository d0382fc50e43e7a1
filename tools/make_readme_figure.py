"""Draw docs/readme-figure.jpg: the cat and one page of conv1's feature maps.

Usage: python tools/make_readme_figure.py
The title says which weights drew it (random ones when this machine is offline).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import (ActivationRecorder, feature_grid, load_image, load_resnet34,  # noqa: E402
                     preprocess, sample_image_path, to_displayable, weights_info)


def main() -> None:
    model = load_resnet34(device="cpu")
    x = preprocess(load_image(sample_image_path()))
    with torch.no_grad(), ActivationRecorder(model, names=["conv1"]) as rec:
        model(x)
    grid = feature_grid(rec["conv1"], page_size=16, nrow=4)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.6), layout="constrained")
    left.imshow(to_displayable(x))
    left.set_title("input: 224×224 after the weights' transforms", fontsize=10)
    image = right.imshow(grid, cmap="viridis", vmin=0, vmax=255)
    right.set_title("conv1, channels 0–15 of 64 (112×112 each)", fontsize=10)
    for ax in (left, right):
        ax.set_axis_off()
    bar = fig.colorbar(image, ax=right, shrink=0.8, ticks=[0, 255])
    bar.ax.set_yticklabels(["channel min", "channel max"])
    info = weights_info(model)
    fig.suptitle(f"ResNet34 with {'ImageNet weights' if info.pretrained else 'seeded random (untrained) weights'}")
    out = ROOT / "docs" / "readme-figure.jpg"
    fig.savefig(out, dpi=80, pil_kwargs={"quality": 88})
    print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size // 1024} KiB), weights: {info}")


if __name__ == "__main__":
    main()
