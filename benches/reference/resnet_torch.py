#!/usr/bin/env python3
"""PyTorch CPU baseline for benches/resnet.rs (run side by side by it).

One case per process, so the peak resident set belongs to that case alone:

    python3 benches/reference/resnet_torch.py --case train64  --iters 5
    python3 benches/reference/resnet_torch.py --case train224 --iters 3
    python3 benches/reference/resnet_torch.py --case eval224  --iters 5

Cases (torchvision ResNet-50, 1000 classes, batch 8, random data, 2 threads):
  train64   one training step at 3x64x64: forward (BN in train mode),
            mean cross-entropy, backward, SGD update (lr 0.01, momentum 0.9)
  train224  the same at 3x224x224
  eval224   eval-mode forward without autograd at 3x224x224

Prints one line of `key=value` pairs that benches/resnet.rs parses:
  median_ms, min_ms, cpu_ms (CPU time per timed step, all threads),
  peak_rss_mib (VmHWM of this process),
  base_rss_mib (resident set after `import torch`, before the model exists),
  peak_over_base_mib (peak minus base: the case's own memory).
"""

import argparse
import time

import torch
import torch.nn.functional as F
import torchvision


def rss_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=["train64", "train224", "eval224"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    base = rss_mib("VmRSS")

    size = 64 if args.case == "train64" else 224
    model = torchvision.models.resnet50(weights=None)
    x = torch.randn(8, 3, size, size)
    y = torch.randint(0, 1000, (8,))

    if args.case.startswith("train"):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    for _ in range(args.warmup):
        step()
    times = []
    cpu0 = time.process_time()
    for _ in range(args.iters):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / args.iters
    times.sort()
    peak = rss_mib("VmHWM")
    print(
        f"case={args.case} median_ms={times[len(times) // 2]:.2f} min_ms={times[0]:.2f} cpu_ms={cpu_ms:.2f} "
        f"peak_rss_mib={peak:.1f} base_rss_mib={base:.1f} peak_over_base_mib={peak - base:.1f} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )


if __name__ == "__main__":
    main()
