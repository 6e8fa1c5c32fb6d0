"""Golden values of fastai's fine-tune recipe for polytune's trainer tests.

Generates `fastai_recipe.json` next to this file from fastai's own code
(fastai 2.8, PyTorch 2.x, CPU):

- `head`: `fastai.vision.learner.create_head(6, 5, lin_ftrs=[16])` in
  float64 (the same layers as the default `lin_ftrs=[512]`, smaller), with
  random γ/β, on a fixed (4, 6, 3, 3) feature map, train mode, its two
  `nn.Dropout`s replaced by fixed masks: the logits, the gradients of
  `sum(logits * G)` with respect to the map and every parameter, the
  running statistics after the step, and eval-mode logits after it.
- `head_default`: names and shapes of `create_head(2048, 102)`'s tensors.
- `fine_tune`: a real `Learner.fine_tune(3, base_lr=2e-3, freeze_epochs=2)`
  on a 3-group model (22 steps per epoch), recording every group's learning
  rate and the momentum before every training step, and the peak rates
  (`slice(base_lr)`, `slice(base_lr/2/100, base_lr/2)`) of both phases.
- `resnet50_groups`: the parameter names of each group of fastai's
  `_resnet_split` on `create_vision_model(resnet50, 102)`, with the body's
  names mapped to torchvision's (`0.0` → `conv1`, `0.4` → `layer1`, …) and
  the head's as `head.<i>`.

Run: python3 tuner/tests/train_golden/fastai_recipe.py
"""
import json
import os

import numpy as np
import torch
from torch import nn
from fastai.vision.all import (CrossEntropyLossFlat, Callback, DataLoaders, Learner,
                               ParamScheduler, create_head, create_vision_model, params)
from fastai.data.load import DataLoader
from fastai.vision.learner import _resnet_split
from torchvision.models import resnet50

HERE = os.path.dirname(os.path.abspath(__file__))
out = {}

# ---- the head -------------------------------------------------------------
torch.manual_seed(0)
C, N, HIDDEN, B = 6, 5, 16, 4
head = create_head(C, N, lin_ftrs=[HIDDEN]).double()
bn1, drop1, lin1, bn2, drop2, lin2 = head[2], head[3], head[4], head[6], head[7], head[8]
assert isinstance(drop1, nn.Dropout) and drop1.p == 0.25 and drop2.p == 0.5
with torch.no_grad():
    for bn in (bn1, bn2):
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
rng = np.random.default_rng(7)


class FixedDrop(nn.Module):
    """nn.Dropout(p) with a given draw: x * mask, mask in {0, 1/(1-p)} (train mode only)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask if self.training else x


def mask(p, shape):
    keep = rng.random(shape) >= p
    return torch.tensor(keep / (1.0 - p), dtype=torch.float64)


m1, m2 = mask(0.25, (B, 2 * C)), mask(0.5, (B, HIDDEN))
head[3], head[7] = FixedDrop(m1), FixedDrop(m2)
x = torch.tensor(rng.normal(size=(B, C, 3, 3)), dtype=torch.float64, requires_grad=True)
g = torch.tensor(rng.normal(size=(B, N)), dtype=torch.float64)
before = {k: v.clone() for k, v in head.state_dict().items()}
head.train()
y = head(x)
(y * g).sum().backward()
head.eval()
with torch.no_grad():
    y_eval = head(x)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


out["head"] = {
    "channels": C, "classes": N, "hidden": HIDDEN, "batch": B,
    "x": flat(x), "g": flat(g), "mask1": flat(m1), "mask2": flat(m2),
    "bn1_weight": flat(before["2.weight"]), "bn1_bias": flat(before["2.bias"]),
    "lin1_weight": flat(before["4.weight"]),
    "bn2_weight": flat(before["6.weight"]), "bn2_bias": flat(before["6.bias"]),
    "lin2_weight": flat(before["8.weight"]),
    "logits": flat(y), "logits_eval_after": flat(y_eval),
    "grad_x": flat(x.grad),
    "grad_bn1_weight": flat(bn1.weight.grad), "grad_bn1_bias": flat(bn1.bias.grad),
    "grad_lin1_weight": flat(lin1.weight.grad),
    "grad_bn2_weight": flat(bn2.weight.grad), "grad_bn2_bias": flat(bn2.bias.grad),
    "grad_lin2_weight": flat(lin2.weight.grad),
    "bn1_running_mean": flat(bn1.running_mean), "bn1_running_var": flat(bn1.running_var),
    "bn2_running_mean": flat(bn2.running_mean), "bn2_running_var": flat(bn2.running_var),
    # fastai's init of the untouched parts: BatchNorm γ = 1, β = 1e-3.
    "init_bn_weight": float(create_head(C, N)[2].weight[0].detach()),
    "init_bn_bias": float(create_head(C, N)[2].bias[0].detach()),
}
full = create_head(2048, 102)
out["head_default"] = [[k, list(v.shape)] for k, v in full.state_dict().items()
                       if not k.endswith("num_batches_tracked")]

# ---- fine_tune's schedule ---------------------------------------------------
torch.manual_seed(0)
n, bs = 1438, 64  # the digits training split: 22 full batches per epoch
xs, ys = torch.randn(n, 4), torch.randint(0, 3, (n,))
ds = list(zip(xs, ys))
dls = DataLoaders(DataLoader(ds, bs=bs, shuffle=True, drop_last=True), DataLoader(ds, bs=bs))
model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3))
steps, peaks = [], []


class Record(Callback):
    order = ParamScheduler.order + 1

    def before_batch(self):
        if self.training:
            steps.append({"lrs": [h["lr"] for h in self.opt.hypers],
                          "mom": self.opt.hypers[-1]["mom"]})


learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(),
                splitter=lambda m: [params(m[0]), params(m[1]), params(m[2])], cbs=[Record()])
with learn.no_bar(), learn.no_logging():
    learn.fine_tune(3, base_lr=2e-3, freeze_epochs=2)
assert len(steps) == 22 * 5
# The peak rates fit_one_cycle gets from `slice`s: Optimizer.set_hyper's rule.
for sl in (slice(2e-3), slice(1e-3 / 100, 1e-3)):
    learn.opt.set_hyper("lr", sl)
    peaks.append([h["lr"] for h in learn.opt.hypers])
out["fine_tune"] = {"steps_per_epoch": 22, "freeze_epochs": 2, "epochs": 3, "base_lr": 2e-3,
                    "lr_mult": 100, "frozen_peaks": peaks[0], "unfrozen_peaks": peaks[1],
                    "steps": steps}

# ---- ResNet-50's layer groups ----------------------------------------------
m = create_vision_model(resnet50, 102, pretrained=False)
names = {id(p): k for k, p in m.named_parameters()}
body = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def torchvision_name(k):
    top, rest = k.split(".", 1)
    if top == "1":
        return "head." + rest
    idx, rest = rest.split(".", 1)
    return f"{body[idx]}.{rest}"


out["resnet50_groups"] = [[torchvision_name(names[id(p)]) for p in group]
                          for group in _resnet_split(m)]

with open(os.path.join(HERE, "fastai_recipe.json"), "w") as f:
    json.dump(out, f, indent=0)
    f.write("\n")
print("wrote", os.path.join(HERE, "fastai_recipe.json"))
