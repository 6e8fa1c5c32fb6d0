#!/usr/bin/env python3
"""An external polytune trial program: tune PolyLoss's epsilon for training
that runs outside polytune (PyTorch, candle, your own code).

polytune runs this once per trial (`[trial] command = ["python3",
"examples/trial_program.py"]` in the study config). The trial spec arrives as
JSON on stdin:

    {"trial": 3, "phase": "search", "epsilon": [2.0], "seed": 1, "train": {...}, "data": {...}}

- `epsilon`: the Poly-N coefficients to train with (all 0 = cross-entropy);
- `seed`: seed everything with it (init, data order, augmentation): every
  epsilon gets the same seeds, so results pair;
- `phase`: "search" -> score on the validation split; "confirm" -> score on
  held-out data the search never saw (your test split);
- `train` / `data`: the study config's tables, passed through untouched.

Print one JSON line last on stdout: at least `val_accuracy` (in [0, 1]) and
`val_loss`; `train_loss`, `epochs`, `seed` are optional. Anything printed
before it is ignored; exit non-zero (message on stderr) to fail the trial.

This example trains a softmax classifier with Poly-1 loss by gradient
descent on a fixed synthetic 3-class problem (pure Python, well under a
second), so it runs anywhere python3 does.
"""

import json
import math
import random
import sys


def make_data(n, rng):
    """Three overlapping Gaussian blobs in 2-D (fixed centres)."""
    centres = [(0.0, 0.0), (1.6, 0.4), (0.6, 1.5)]
    xs, ys = [], []
    for i in range(n):
        c = i % 3
        xs.append((centres[c][0] + rng.gauss(0, 0.8), centres[c][1] + rng.gauss(0, 0.8)))
        ys.append(c)
    return xs, ys


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def main():
    spec = json.load(sys.stdin)
    eps = float(spec["epsilon"][0]) if spec["epsilon"] else 0.0
    seed = int(spec["seed"])
    phase = spec["phase"]
    epochs = int(spec.get("train", {}).get("epochs", 30))
    lr = float(spec.get("train", {}).get("lr", 0.5))

    # The data is fixed (seed 12345); the trial's seed drives init and order.
    data_rng = random.Random(12345)
    train_x, train_y = make_data(150, data_rng)
    valid_x, valid_y = make_data(300, data_rng)
    test_x, test_y = make_data(300, data_rng)
    eval_x, eval_y = (valid_x, valid_y) if phase == "search" else (test_x, test_y)

    rng = random.Random(seed)
    w = [[rng.gauss(0, 0.1) for _ in range(3)] for _ in range(3)]  # 2 features + bias
    order = list(range(len(train_x)))
    loss = float("nan")
    for _ in range(epochs):
        rng.shuffle(order)
        grad = [[0.0] * 3 for _ in range(3)]
        total = 0.0
        for i in order:
            f = (train_x[i][0], train_x[i][1], 1.0)
            p = softmax([sum(w[k][j] * f[j] for j in range(3)) for k in range(3)])
            pt = p[train_y[i]]
            # Poly-1: CE + eps (1 - pt); d/dz_k = (p_k - y_k)(1 + eps pt)
            total += -math.log(max(pt, 1e-12)) + eps * (1.0 - pt)
            for k in range(3):
                g = (p[k] - (1.0 if k == train_y[i] else 0.0)) * (1.0 + eps * pt)
                for j in range(3):
                    grad[k][j] += g * f[j]
        for k in range(3):
            for j in range(3):
                w[k][j] -= lr * grad[k][j] / len(order)
        loss = total / len(order)
        if not math.isfinite(loss):
            print(f"training diverged at epsilon {eps}", file=sys.stderr)
            sys.exit(3)

    correct, ce = 0, 0.0
    for x, y in zip(eval_x, eval_y):
        p = softmax([w[k][0] * x[0] + w[k][1] * x[1] + w[k][2] for k in range(3)])
        correct += max(range(3), key=lambda k: p[k]) == y
        ce += -math.log(max(p[y], 1e-12))
    print(json.dumps({
        "val_accuracy": correct / len(eval_x),
        "val_loss": ce / len(eval_x),
        "train_loss": loss,
        "epochs": epochs,
        "seed": seed,
    }))


if __name__ == "__main__":
    main()
