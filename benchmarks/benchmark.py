"""What recording costs, measured in one run and reported as ratios.

Usage: python benchmarks/benchmark.py [--repeats N]

Compares, at batch 1 and batch 8, a bare ResNet34 forward pass, the same pass
while an ActivationRecorder keeps all 36 conv outputs, and torchvision's FX
feature extractor returning the same 36 tensors. The three are interleaved
(bare, recorder, FX, bare, ...) so that drift in machine load hits all of them
alike; medians are reported. On Linux the recording part runs a second time with
glibc told to keep freed memory, which shows how much of the cost is page faults
from holding the activations (not the hooks). Then the explorer's redraw
(bench_explorer.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torchvision.models import resnet34
from torchvision.models.feature_extraction import create_feature_extractor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.hooks import ActivationRecorder, conv_layers  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_recording(batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = resnet34(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224)
    extractor = create_feature_extractor(model, return_nodes=[n for n, _ in conv_layers(model)])
    recorder = ActivationRecorder(model)

    def record():
        with recorder:
            model(x)

    variants = {"bare forward": lambda: model(x), "recorder (36 convs)": record, "FX extractor": lambda: extractor(x)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                times[name].append(timed(fn))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    medians["recorded MiB"] = recorder.nbytes / 2**20
    return medians


# glibc hands freed memory back to the OS; a recorder keeps ~14 MiB of activations alive,
# so the next pass page-faults fresh memory. These settings make glibc keep it.
KEEP_FREED_MEMORY = {"MALLOC_TRIM_THRESHOLD_": "4000000000", "MALLOC_MMAP_THRESHOLD_": "4000000000"}


def report_recording(repeats: int) -> None:
    for batch in (1, 8):
        m = bench_recording(batch, repeats if batch == 1 else max(3, repeats // 2))
        bare = m["bare forward"]
        print(f"batch {batch}: bare forward median {bare * 1e3:.1f} ms")
        for name in ("recorder (36 convs)", "FX extractor"):
            print(f"  {name:20s} {m[name] / bare:.3f} × bare ({(m[name] / bare - 1) * 100:+.1f} %)")
        print(f"  bytes held by the recorder: {m['recorded MiB']:.2f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--recording-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 8)))
    if args.recording_only:
        report_recording(args.repeats)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, CPU")
    print("== recording, default memory allocator ==")
    report_recording(args.repeats)
    if platform.system() == "Linux":
        print("== recording, glibc keeping freed memory (" + ", ".join(KEEP_FREED_MEMORY) + ") ==")
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--recording-only", "--repeats", str(args.repeats)],
                       env={**os.environ, **KEEP_FREED_MEMORY}, check=True)
    try:
        from bench_explorer import run as run_explorer
    except ImportError:
        print("explorer benchmark: benchmarks/bench_explorer.py not found")
    else:
        print("== explorer ==")
        sys.stdout.flush()
        for line in run_explorer():
            print(line)


if __name__ == "__main__":
    main()
