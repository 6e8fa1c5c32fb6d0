#!/usr/bin/env python3
"""Golden values for the ResNet parity tests (tests/resnet_parity.rs).

Builds three small networks with torchvision's own ``ResNet``, ``Bottleneck``
and ``BasicBlock`` code (only the channel widths differ from ResNet-50/18, so
the forward pass, the block wiring, the downsample rule of ``_make_layer``
and the parameter names are torchvision's), gives them random weights and
batch-norm statistics, and writes for each:

* ``resnet_<net>_weights.safetensors``: the float32 ``state_dict`` (with the
  int64 ``num_batches_tracked`` buffers torchvision writes, which the Rust
  loader must skip);
* ``resnet_<net>_expected.safetensors``: the fixed input ``input`` and
  ``target`` (class indices), the eval-mode logits ``eval_logits``, and one
  training-mode step: ``train_logits``, ``train_loss`` (mean cross-entropy),
  ``grad.<param>`` for every parameter and ``running.<buffer>`` for every
  batch-norm running statistic after that step.

The expected values are computed in float64 and stored as float32, so the
Rust side (float32) is compared with a more accurate reference.

Also writes ``resnet_torchvision_keys.txt``: names and shapes of the
``state_dict`` of torchvision's ResNet-50 and ResNet-18 (``weights=None``,
nothing is downloaded), one ``<model> <key> <comma-separated shape>`` a line
(an empty shape is a scalar buffer such as ``num_batches_tracked``).

Run from the repository root: ``python3 tests/reference/resnet_reference.py``
(torch 2.x, torchvision, safetensors). Deterministic: seeds are fixed.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

OUT = os.path.dirname(os.path.abspath(__file__))


class ReducedResNet(ResNet):
    """torchvision's ResNet with configurable widths.

    ``ResNet.__init__`` hard-codes 64 stem channels and planes 64/128/256/512;
    this constructor repeats it with other numbers and otherwise uses
    torchvision's code: ``_make_layer`` (downsample rule, strides, block
    construction), ``_forward_impl`` and the blocks themselves.
    ``small_stem`` replaces the 7x7/2 stem conv + max-pool with a 3x3/1 conv
    and no pooling (the layout of our ``SmallResNet`` for 8x8..32x32 inputs).
    """

    def __init__(self, block, layers, stem, planes, num_classes, small_stem=False):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = stem
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        if small_stem:
            self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (p, n) in enumerate(zip(planes, layers)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, p, n, stride=1 if i == 0 else 2))
        self.n_layers = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[-1] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _forward_impl(self, x):
        if self.n_layers == 4:
            return super()._forward_impl(x)
        # Same sequence as torchvision's _forward_impl, with fewer stages.
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomise_bn(model, gen):
    """Non-trivial affine parameters and running statistics, so parity tests
    exercise every term of the batch-norm formulas."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) + 0.5
            m.bias.data = torch.randn(c, generator=gen) * 0.2
            m.running_mean.data = torch.randn(c, generator=gen) * 0.2
            m.running_var.data = torch.rand(c, generator=gen) * 1.5 + 0.5


NETS = {
    # Reduced ResNet-50: Bottleneck blocks, 7x7/2 stem + max-pool, 4 stages.
    "bottleneck": dict(block=Bottleneck, layers=[2, 1, 1, 1], stem=8, planes=[4, 8, 8, 16],
                       num_classes=10, input=(4, 3, 37, 37)),
    # Reduced ResNet-18: BasicBlocks; layer1's first block has no downsample.
    "basic": dict(block=BasicBlock, layers=[2, 1, 1, 1], stem=8, planes=[8, 16, 16, 32],
                  num_classes=10, input=(4, 3, 37, 37)),
    # SmallResNet's layout (3x3 stem, no max-pool, two BasicBlock stages).
    "small": dict(block=BasicBlock, layers=[1, 1], stem=8, planes=[8, 16], num_classes=10,
                  small_stem=True, input=(4, 3, 11, 11)),
    # 16 channels and 16x16 maps in layer1 (4 images: 64 tiles of 4x4): its
    # 3x3 convolutions take the CPU kernels' Winograd path.
    "wide": dict(block=BasicBlock, layers=[2, 1, 1, 1], stem=16, planes=[16, 16, 16, 16],
                 num_classes=10, input=(4, 3, 64, 64)),
}


def generate(name, seed):
    cfg = dict(NETS[name])
    shape = cfg.pop("input")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ReducedResNet(**cfg)
    randomise_bn(model, gen)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(OUT, f"resnet_{name}_weights.safetensors"))

    x = torch.randn(*shape, generator=gen)
    target = torch.randint(0, cfg["num_classes"], (shape[0],), generator=gen)
    model = model.double()
    out = {"input": x, "target": target}

    model.eval()
    with torch.no_grad():
        out["eval_logits"] = model(x.double())

    model.train()
    logits = model(x.double())
    loss = F.cross_entropy(logits, target)
    loss.backward()
    out["train_logits"] = logits.detach()
    out["train_loss"] = loss.detach().reshape(1)
    for k, p in model.named_parameters():
        out[f"grad.{k}"] = p.grad
    for k, b in model.named_buffers():
        if "running" in k:
            out[f"running.{k}"] = b
    out = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in out.items()}
    save_file(out, os.path.join(OUT, f"resnet_{name}_expected.safetensors"))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} parameters, eval logits[0,:3] = {out['eval_logits'][0, :3].tolist()}")


def torchvision_keys():
    with open(os.path.join(OUT, "resnet_torchvision_keys.txt"), "w") as f:
        f.write(f"# torch {torch.__version__}, torchvision {torchvision.__version__}\n")
        for name, ctor in [("resnet50", resnet50), ("resnet18", resnet18)]:
            for k, v in ctor(weights=None).state_dict().items():
                f.write(f"{name} {k} {','.join(str(d) for d in v.shape)}\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    for i, net in enumerate(NETS):
        generate(net, 1234 + i)
    torchvision_keys()
