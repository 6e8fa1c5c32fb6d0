"""Baselines for `cargo bench -p polytune --bench data`, on the same files.

- PIL: open + convert('RGB') + fastai's Resize(method=Pad, pad_mode=Zeros)
  (pad to the square in the original resolution, then PIL bilinear resize),
  one thread, images/s at 64 and 224 px.
- PyTorch (CPU, all threads): fastai's batch augmentation path for 64
  images: affine_grid + grid_sample (bilinear, reflection) + logit-space
  lighting, images/s at 64 and 224 px.

Run after the Rust bench (which writes target/polytune-bench-data/):
    python3 tuner/benches/data_baseline.py
"""
import glob
import math
import os
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "target", "polytune-bench-data", "folders")


def fastai_pad_resize(path, size):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    m = w / size if w / size > h / size else h / size
    cp = int(m * size)
    tl = (int(0.5 * (w - cp)), int(0.5 * (h - cp)))
    canvas = Image.new("RGB", (cp, cp))
    canvas.paste(img.crop((max(tl[0], 0), max(tl[1], 0), min(max(tl[0], 0) + cp, w), min(max(tl[1], 0) + cp, h))),
                 (max(-tl[0], 0), max(-tl[1], 0)))
    return np.asarray(canvas.resize((size, size), Image.BILINEAR))


def bench(fn, reps):
    fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    files = sorted(glob.glob(os.path.join(ROOT, "*", "*", "*.jpg")))
    assert files, f"run the Rust bench first: no images under {ROOT}"
    torch.set_num_threads(os.cpu_count())
    for size in (64, 224):
        t = bench(lambda: [fastai_pad_resize(f, size) for f in files], 5)
        print(f"PIL decode+pad+resize {size}px, one thread: {len(files) / t:8.1f} images/s")
    for size in (64, 224):
        x = torch.rand(64, 3, size, size)
        theta = torch.tensor([[[0.98, 0.05, 0.01], [-0.05, 0.98, -0.02]]]).repeat(64, 1, 1)

        def step():
            grid = torch.nn.functional.affine_grid(theta, x.shape, align_corners=True)
            y = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                                                align_corners=True)
            y = torch.sigmoid((torch.logit(y.clamp(1e-7, 1 - 1e-7)) + 0.2) * 1.1)
            return (y - 0.45) / 0.226

        t = bench(step, 10)
        print(f"PyTorch affine+lighting batch of 64 at {size}px: {64 / t:8.1f} images/s")


if __name__ == "__main__":
    main()
