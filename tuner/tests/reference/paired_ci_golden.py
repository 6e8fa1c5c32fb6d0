#!/usr/bin/env python3
"""Golden values for `polytune::stats` (paired confidence interval, Student-t quantile).

Writes `paired_ci_golden.json` next to this file:

    pip install numpy scipy
    python3 tuner/tests/reference/paired_ci_golden.py

* `quantiles`: scipy.stats.t.ppf(p, dof), integer and non-integer dof, both tails.
* `cases`: paired samples a, b and a level; mean / sample std (ddof=1) / se of
  a - b from numpy, the CI from scipy.stats.ttest_rel(a, b).confidence_interval(level)
  and the two-sided p-value of the same test.
"""
import json
import os

import numpy as np
from scipy import stats


def main():
    rng = np.random.default_rng(7)
    quantiles = []
    for p in [0.975, 0.025, 0.95, 0.995, 0.5, 0.6, 0.9999, 1e-6, 0.8]:
        for dof in [1.0, 2.0, 3.0, 4.0, 4.5, 19.0, 100.0]:
            quantiles.append({"p": p, "dof": dof, "q": float(stats.t.ppf(p, dof))})

    cases = []

    def case(name, a, b, level):
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        d = a - b
        res = stats.ttest_rel(a, b)
        ci = res.confidence_interval(level)
        cases.append({
            "name": name,
            "a": a.tolist(),
            "b": b.tolist(),
            "level": level,
            "n": int(len(d)),
            "mean": float(d.mean()),
            "std": float(d.std(ddof=1)),
            "se": float(d.std(ddof=1) / np.sqrt(len(d))),
            "ci_low": float(ci.low),
            "ci_high": float(ci.high),
            "p_value": float(res.pvalue),
            "significant": bool(ci.low > 0 or ci.high < 0),
        })

    case("n2", [0.91, 0.93], [0.90, 0.905], 0.95)
    case("n3", [0.962, 0.970, 0.958], [0.960, 0.961, 0.955], 0.95)
    case("n5_not_significant", [0.968, 0.972, 0.965, 0.970, 0.966], [0.969, 0.968, 0.967, 0.971, 0.964], 0.95)
    case("n5_level90", [0.968, 0.972, 0.965, 0.970, 0.966], [0.969, 0.968, 0.967, 0.971, 0.964], 0.90)
    b20 = 0.95 + 0.01 * rng.standard_normal(20)
    a20 = b20 + 0.004 + 0.003 * rng.standard_normal(20)
    case("n20_significant", a20.tolist(), b20.tolist(), 0.95)
    case("n20_level99", a20.tolist(), b20.tolist(), 0.99)
    a20n = b20 + 0.004 * rng.standard_normal(20)
    case("n20_null", a20n.tolist(), b20.tolist(), 0.95)
    case("n3_negative", [1.0, 2.0, 3.0], [2.5, 3.1, 4.4], 0.95)

    out = {"quantiles": quantiles, "cases": cases}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paired_ci_golden.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print("wrote", path)


if __name__ == "__main__":
    main()
