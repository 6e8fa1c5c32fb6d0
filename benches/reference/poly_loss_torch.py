"""PyTorch CPU side of benches/poly_loss.rs: forward + backward of the seed's
PolyLoss class (epsilon = 2) and of F.cross_entropy, at the same shapes, with
the same thread count as the Rust side (2).

    python3 benches/reference/poly_loss_torch.py [--threads 2] [--seconds 2]
Prints one line per (impl, shape): median microseconds per fwd+bwd, and the
minimum (on a shared machine, the call that ran undisturbed).
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class PolyLoss(nn.Module):
    """The seed's PolyLoss (the usual blog implementation)."""

    def __init__(self, epsilon=2.0, reduction="mean"):
        super().__init__()
        self.epsilon = epsilon
        self.reduction = reduction

    def forward(self, logits, labels):
        labels_onehot = F.one_hot(labels, num_classes=logits.shape[-1]).to(device=logits.device, dtype=logits.dtype)
        pt = torch.sum(labels_onehot * F.softmax(logits, dim=-1), dim=-1)
        CE = F.cross_entropy(input=logits, target=labels, reduction="none")
        poly1 = CE + self.epsilon * (1 - pt)
        if self.reduction == "mean":
            return poly1.mean()
        if self.reduction == "sum":
            return poly1.sum()
        return poly1


SHAPES = [(64, 102), (256, 1000), (1024, 1000), (4096, 1000)]


def bench(fn, seconds):
    for _ in range(5):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 10:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6, min(times) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    poly = PolyLoss(2.0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for b, c in SHAPES:
        x = (torch.rand(b, c) * 8 - 4).requires_grad_(True)
        t = torch.randint(0, c, (b,))

        def seed_poly():
            x.grad = None
            poly(x, t).backward()

        def ce():
            x.grad = None
            F.cross_entropy(x, t).backward()

        for name, fn in [("torch_seed_polyloss", seed_poly), ("torch_cross_entropy", ce)]:
            med, low = bench(fn, args.seconds)
            print(f"{name:22s} {b}x{c:<6d} {med:10.1f} us  min {low:10.1f} us")


if __name__ == "__main__":
    main()
