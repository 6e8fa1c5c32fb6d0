"""PyTorch CPU baseline for benches/conv2d.rs (issue 3, vision ops).

Times, with the same thread count as the Rust side (default 2):
  - one 3x3 conv 256->256, stride 1, padding 1, no bias, on (8, 256, 56, 56):
    forward, and forward + backward (input and weight gradients), in ms and GFLOP/s;
  - BatchNorm2d (training mode) + ReLU, forward + backward, on (8, 256, 56, 56);
  - residual add + ReLU, forward + backward, on (8, 256, 56, 56).

Run: python3 benches/reference/conv_torch.py [--threads 2] [--iters 5]
"""

import argparse
import time

import torch
import torch.nn.functional as F


def bench(fn, iters, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    b, c, h, w = 8, 256, 56, 56
    flops_fwd = 2 * b * c * h * w * c * 9  # 2·B·O·H'W'·I·K²
    x = torch.randn(b, c, h, w, requires_grad=True)
    weight = (torch.randn(c, c, 3, 3) * (2.0 / (c * 9)) ** 0.5).requires_grad_()
    gy = torch.randn(b, c, h, w)

    def conv_fwd():
        with torch.no_grad():
            F.conv2d(x, weight, None, 1, 1)

    def conv_fwd_bwd():
        x.grad = None
        weight.grad = None
        F.conv2d(x, weight, None, 1, 1).backward(gy)

    t_fwd = bench(conv_fwd, args.iters)
    t_fb = bench(conv_fwd_bwd, args.iters)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, mkldnn={torch.backends.mkldnn.is_available()}")
    print(f"conv3x3 256->256 56x56 b8 forward:         {t_fwd * 1e3:9.1f} ms  {flops_fwd / t_fwd / 1e9:7.1f} GFLOP/s")
    print(f"conv3x3 256->256 56x56 b8 forward+backward: {t_fb * 1e3:9.1f} ms  {3 * flops_fwd / t_fb / 1e9:7.1f} GFLOP/s")

    bn = torch.nn.BatchNorm2d(c).train()
    xb = torch.randn(b, c, h, w, requires_grad=True)

    def bn_relu():
        xb.grad = None
        bn.zero_grad()
        torch.relu(bn(xb)).backward(gy)

    r = torch.randn(b, c, h, w, requires_grad=True)

    def add_relu():
        xb.grad = None
        r.grad = None
        torch.relu(xb + r).backward(gy)

    print(f"bn(train)+relu fwd+bwd (8,256,56,56):        {bench(bn_relu, args.iters) * 1e3:9.2f} ms")
    print(f"add+relu fwd+bwd (8,256,56,56):              {bench(add_relu, args.iters) * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
