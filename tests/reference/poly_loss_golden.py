"""Golden values for tests/loss_golden.rs, computed with PyTorch autograd.

Run from the repository root:  python3 tests/reference/poly_loss_golden.py
Writes tests/reference/poly_loss_golden.json (inputs, losses, gradients).

Two families:
* the seed's PolyLoss class (the blog implementation: CE + eps * (1 - pt));
* the paper's formulas (Leng et al., ICLR 2022) written with torch ops,
  including PyTorch's cross_entropy rules for class weights, ignore_index and
  label smoothing, the focal variants and the sigmoid variants.
"""
import json
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(20220425)
torch.set_default_dtype(torch.float64)


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


def paper_softmax(logits, target, eps, smoothing=0.0, weight=None, ignore_index=-100,
                  gamma=None, alpha=None, reduction="mean"):
    """CE + sum_j eps_j (1-pt)^j (focal: alpha (1-pt)^g CE + sum_j eps_j (1-pt)^(g+j)).

    The CE part is exactly F.cross_entropy(..., reduction="none"); the
    polynomial term of a row is weighted like its CE term (w[target], or
    sum_k w_k y_k for probability targets); "mean" divides by PyTorch's
    denominator (sum of the counted rows' target weights, or B).
    """
    B, C = logits.shape
    ce = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                         label_smoothing=smoothing, reduction="none")
    p = F.softmax(logits, dim=-1)
    if target.dtype == torch.long:
        keep = target != ignore_index
        safe = torch.where(keep, target, torch.zeros_like(target))
        y = F.one_hot(safe, C).to(logits.dtype)
        w_row = weight[safe] if weight is not None else torch.ones(B)
        w_row = w_row * keep
        denom = w_row.sum()
    else:
        keep = torch.ones(B, dtype=torch.bool)
        y = target
        w_row = (y * (1 - smoothing) + smoothing / C) @ (weight if weight is not None else torch.ones(C))
        denom = torch.tensor(float(B))
    ys = y * (1 - smoothing) + smoothing / C
    pt = (ys * p).sum(-1)
    f = 1 - pt
    g0 = gamma if gamma is not None else 0.0
    poly = sum(e * f ** (g0 + j + 1) for j, e in enumerate(eps))
    a = (alpha if alpha is not None else 1.0) * f ** gamma if gamma is not None else 1.0
    per = torch.where(keep, a * ce + w_row * poly, torch.zeros(B))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / denom


def paper_sigmoid(logits, y, eps, gamma=None, alpha=None, weight=None):
    """The paper's sigmoid Poly-1 / Poly-1 focal (its TF code), N terms, mean over logits."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    pt = y * p + (1 - y) * (1 - p)
    g0 = gamma if gamma is not None else 0.0
    if gamma is not None:
        fl = ce * (1 - pt) ** gamma
        if alpha is not None:
            fl = (alpha * y + (1 - alpha) * (1 - y)) * fl
    else:
        fl = ce
    poly = fl + sum(e * (1 - pt) ** (g0 + j + 1) for j, e in enumerate(eps))
    if weight is not None:
        poly = poly * weight
    return poly.mean()


cases = []


def add(name, logits, target, fn, params):
    x = logits.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    cases.append({
        "name": name,
        "b": logits.shape[0],
        "c": logits.shape[1],
        "logits": logits.flatten().tolist(),
        "targets": target.tolist() if target.dtype == torch.long else None,
        "probs": target.flatten().tolist() if target.dtype != torch.long else None,
        "params": params,
        "loss": loss.item(),
        "grad": x.grad.flatten().tolist(),
    })


B, C = 6, 5
z = torch.randn(B, C) * 2
t = torch.randint(0, C, (B,))
t[1] = 2  # an ignored row in the cases with ignore_index = 2
w = torch.rand(C) + 0.5
yp = torch.softmax(torch.randn(B, C) * 2, -1)
ym = (torch.rand(B, C) > 0.6).to(torch.float64)

add("seed_poly1_eps2", z, t, lambda x: PolyLoss(2.0)(x, t), {"epsilon": [2.0]})
add("seed_poly1_eps2_sum", z, t, lambda x: PolyLoss(2.0, "sum")(x, t), {"epsilon": [2.0], "reduction": "sum"})
add("seed_poly1_eps-1", z, t, lambda x: PolyLoss(-1.0)(x, t), {"epsilon": [-1.0]})
add("paper_ce_eps0_weights_ignore_smoothing", z, t,
    lambda x: F.cross_entropy(x, t, weight=w, ignore_index=2, label_smoothing=0.1),
    {"epsilon": [0.0], "weight": w.tolist(), "ignore_index": 2, "label_smoothing": 0.1})
add("paper_poly3_weights_ignore_smoothing", z, t,
    lambda x: paper_softmax(x, t, [2.0, -0.5, 0.3], 0.1, w, 2),
    {"epsilon": [2.0, -0.5, 0.3], "weight": w.tolist(), "ignore_index": 2, "label_smoothing": 0.1})
add("paper_poly2_per_sample_weighted_sum", z, t,
    lambda x: (paper_softmax(x, t, [1.0, 0.5], 0.0, w, 2, reduction="none") * torch.arange(1, B + 1)).sum(),
    {"epsilon": [1.0, 0.5], "weight": w.tolist(), "ignore_index": 2, "reduction": "none"})
add("paper_poly1_probs_weights_smoothing", z, yp,
    lambda x: paper_softmax(x, yp, [2.0], 0.05, w),
    {"epsilon": [2.0], "weight": w.tolist(), "label_smoothing": 0.05})
add("paper_poly1_focal_softmax", z, t,
    lambda x: paper_softmax(x, t, [1.0], gamma=2.0, alpha=0.25),
    {"epsilon": [1.0], "kind": "poly-focal", "gamma": 2.0, "alpha": 0.25})
add("paper_poly1_sigmoid", z, ym,
    lambda x: paper_sigmoid(x, ym, [1.0]),
    {"epsilon": [1.0], "kind": "poly-sigmoid"})
add("paper_poly1_sigmoid_focal", z, ym,
    lambda x: paper_sigmoid(x, ym, [-1.0], gamma=2.0, alpha=0.25),
    {"epsilon": [-1.0], "kind": "poly-sigmoid-focal", "gamma": 2.0, "alpha": 0.25})
add("paper_poly2_sigmoid_weights", z, ym,
    lambda x: paper_sigmoid(x, ym, [1.0, 0.5], weight=w),
    {"epsilon": [1.0, 0.5], "kind": "poly-sigmoid", "weight": w.tolist()})

out = pathlib.Path(__file__).with_name("poly_loss_golden.json")
out.write_text(json.dumps({"generator": "tests/reference/poly_loss_golden.py",
                           "torch": torch.__version__, "cases": cases}, indent=1) + "\n")
print(f"wrote {len(cases)} cases to {out}")
