#!/usr/bin/env python3
"""Convert a torchvision or timm ResNet checkpoint (.pth) to .safetensors.

The Rust loader (`poly_loss::nn::pretrained`) reads the torchvision
`state_dict` layout (`conv1.weight`, `bn1.running_var`,
`layer2.0.downsample.1.weight`, `fc.bias`, ...); timm's ResNets use the same
names. The essential conversion is one line:

    python3 -c "import torch, safetensors.torch as st; st.save_file({k: v.contiguous() for k, v in torch.load('resnet50-11ad3fa6.pth', map_location='cpu', weights_only=True).items()}, 'resnet50.safetensors')"

This script does the same and also unwraps `{"state_dict": ...}` /
`{"model": ...}` checkpoints, strips a `module.` prefix (DataParallel) and can
build the file straight from torchvision's weight enums (downloads through
torchvision's cache):

    python3 scripts/torchvision_to_safetensors.py resnet50-11ad3fa6.pth resnet50.safetensors
    python3 scripts/torchvision_to_safetensors.py --torchvision resnet50:IMAGENET1K_V2 resnet50.safetensors

Tensors keep their dtype (float16/bfloat16 are converted to f32 by the Rust
loader; `--float32` converts here instead).
"""

import argparse

import torch
from safetensors.torch import save_file


def load_state_dict(src, torchvision_spec):
    if torchvision_spec:
        import torchvision

        arch, _, weights = torchvision_spec.partition(":")
        model = getattr(torchvision.models, arch)(weights=weights or "DEFAULT")
        return model.state_dict()
    sd = torch.load(src, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", help="checkpoint .pth (a state_dict)")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--torchvision", metavar="ARCH:WEIGHTS", help="e.g. resnet50:IMAGENET1K_V2")
    ap.add_argument("--float32", action="store_true", help="convert floating tensors to float32")
    args = ap.parse_args()
    if (args.src is None) == (args.torchvision is None):
        ap.error("give either a checkpoint path or --torchvision ARCH:WEIGHTS")
    sd = load_state_dict(args.src, args.torchvision)
    out = {}
    for k, v in sd.items():
        if args.float32 and v.is_floating_point():
            v = v.float()
        out[k] = v.contiguous()
    save_file(out, args.dst)
    print(f"wrote {len(out)} tensors to {args.dst}")


if __name__ == "__main__":
    main()
