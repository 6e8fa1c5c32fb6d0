#!/usr/bin/env python3
"""Golden values for `polytune::search::gp` and `polytune::search::acquisition`.

Writes `gp_golden.json` next to this file. Run from anywhere:

    pip install numpy scipy scikit-learn
    python3 tuner/tests/reference/gp_golden.py

Contents
* `fixed`: GP regression with fixed hyperparameters and no seed effect,
  computed by scikit-learn's GaussianProcessRegressor
  (ConstantKernel * Matern(nu=2.5, ARD) + WhiteKernel, normalize_y=True,
  optimizer=None, alpha=0): posterior mean, LATENT variance (sklearn's
  predictive variance includes the WhiteKernel noise; it is subtracted here
  and cross-checked against a direct numpy computation) and the log marginal
  likelihood of the standardised targets.
* `grouped`: the same model plus a seed random effect
  cov(y_i, y_j) = s_f k(x_i, x_j) + s_b [g_i = g_j] + s_n [i = j],
  computed with numpy (scikit-learn has no such kernel): latent posterior
  mean / variance, LML, and the posterior mean of each group effect b_g.
* `fit`: one data set and scikit-learn's type-II ML optimum over the same
  bounds the Rust `FitOptions` uses (many restarts), for the no-group model.
* `ei`: expected improvement for maximisation, closed form with scipy.stats.norm.
"""
import json
import os

import numpy as np
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel


def matern52(a, b, ls):
    d = (a[:, None, :] - b[None, :, :]) / np.asarray(ls)[None, None, :]
    r = np.sqrt((d ** 2).sum(-1))
    s5 = np.sqrt(5.0) * r
    return (1.0 + s5 + 5.0 * r ** 2 / 3.0) * np.exp(-s5)


def standardise(y):
    m = y.mean()
    s = y.std()
    if s == 0.0 or len(y) == 1:
        s = 1.0
    return m, s, (y - m) / s


def numpy_gp(x, g, y, xs, ls, sf, sb, sn):
    """Latent posterior with a seed random effect (standardised internally)."""
    m, s, yn = standardise(y)
    same = (g[:, None] == g[None, :]).astype(float)
    k = sf * matern52(x, x, ls) + sb * same + sn * np.eye(len(y))
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, yn))
    ks = sf * matern52(xs, x, ls)
    mean = m + s * (ks @ alpha)
    v = np.linalg.solve(chol, ks.T)
    var = s ** 2 * (sf - (v ** 2).sum(0))
    lml = -0.5 * yn @ alpha - np.log(np.diag(chol)).sum() - 0.5 * len(y) * np.log(2 * np.pi)
    groups = sorted(set(g.tolist()))
    effects = {str(gr): float(s * sb * alpha[g == gr].sum()) for gr in groups}
    return mean, var, lml, effects


def sklearn_fixed(x, y, xs, ls, sf, sn):
    kernel = ConstantKernel(sf, "fixed") * Matern(length_scale=list(ls), length_scale_bounds="fixed", nu=2.5) \
        + WhiteKernel(sn, "fixed")
    gp = GaussianProcessRegressor(kernel=kernel, optimizer=None, normalize_y=True, alpha=0.0)
    gp.fit(x, y)
    mean, std = gp.predict(xs, return_std=True)
    s = y.std() if y.std() != 0 else 1.0
    latent_var = std ** 2 - sn * s ** 2
    return mean, latent_var, gp.log_marginal_likelihood_value_


def fixed_case(name, x, y, xs, ls, sf, sn):
    mean, var, lml = sklearn_fixed(x, y, xs, ls, sf, sn)
    g = np.arange(len(y))
    nm, nv, nl, _ = numpy_gp(x, g, y, xs, ls, sf, 0.0, sn)
    assert np.allclose(mean, nm, rtol=1e-10, atol=1e-12), name
    assert np.allclose(var, nv, rtol=1e-7, atol=1e-12), name
    assert abs(lml - nl) < 1e-9 * max(1.0, abs(lml)), name
    return {
        "name": name,
        "x": x.tolist(),
        "y": y.tolist(),
        "test_x": xs.tolist(),
        "length_scales": list(ls),
        "signal_var": sf,
        "noise_var": sn,
        "mean": mean.tolist(),
        "var": nv.tolist(),  # numpy latent variance (sklearn's minus noise agrees to 1e-7)
        "lml": float(lml),
    }


def grouped_case(name, x, g, y, xs, ls, sf, sb, sn):
    mean, var, lml, effects = numpy_gp(x, g, y, xs, ls, sf, sb, sn)
    return {
        "name": name,
        "x": x.tolist(),
        "groups": g.tolist(),
        "y": y.tolist(),
        "test_x": xs.tolist(),
        "length_scales": list(ls),
        "signal_var": sf,
        "group_var": sb,
        "noise_var": sn,
        "mean": mean.tolist(),
        "var": var.tolist(),
        "lml": float(lml),
        "group_effects": effects,
    }


def main():
    rng = np.random.default_rng(20260601)
    out = {"fixed": [], "grouped": []}

    # 1-D, fixed hyperparameters.
    x1 = np.array([0.02, 0.11, 0.25, 0.33, 0.48, 0.61, 0.77, 0.93])[:, None]
    y1 = np.sin(6 * x1[:, 0]) + 0.1 * rng.standard_normal(len(x1))
    xs1 = np.array([0.0, 0.05, 0.25, 0.4, 0.555, 0.7, 0.85, 1.0])[:, None]
    out["fixed"].append(fixed_case("1d", x1, y1, xs1, [0.3], 1.5, 0.05))

    # 2-D, fixed hyperparameters, anisotropic.
    x2 = rng.uniform(size=(12, 2))
    y2 = np.cos(3 * x2[:, 0]) * np.sin(5 * x2[:, 1]) + 0.05 * rng.standard_normal(12)
    xs2 = np.vstack([rng.uniform(size=(6, 2)), x2[3:4], [[0.0, 1.0]]])
    out["fixed"].append(fixed_case("2d", x2, y2, xs2, [0.4, 0.15], 0.8, 0.01))

    # Grouped (seed effect), 1-D: 3 seeds x 5 points, seeds shift all points alike.
    xg = np.tile(np.linspace(0.05, 0.95, 5), 3)[:, None] + 0.01 * rng.standard_normal((15, 1))
    gg = np.repeat(np.array([7, 11, 42]), 5)
    shift = {7: 0.8, 11: -0.5, 42: 0.1}
    yg = np.sin(4 * xg[:, 0]) + np.array([shift[k] for k in gg]) + 0.05 * rng.standard_normal(15)
    xsg = np.array([0.0, 0.2, 0.5, 0.72, 1.0])[:, None]
    out["grouped"].append(grouped_case("1d_groups", xg, gg, yg, xsg, [0.25], 1.2, 0.5, 0.02))

    # Grouped, 2-D, unbalanced groups (one group has a single point).
    xh = rng.uniform(size=(9, 2))
    gh = np.array([1, 1, 1, 1, 2, 2, 2, 2, 3])
    yh = xh[:, 0] - xh[:, 1] ** 2 + 0.3 * (gh == 2) + 0.02 * rng.standard_normal(9)
    xsh = rng.uniform(size=(4, 2))
    out["grouped"].append(grouped_case("2d_groups", xh, gh, yh, xsh, [0.5, 0.7], 0.9, 0.2, 0.005))

    # ML fit golden (no group effect): sklearn optimum over the Rust default bounds.
    xf = np.linspace(0.0, 1.0, 15)[:, None]
    yf = np.sin(3 * xf[:, 0]) + 0.5 * xf[:, 0] + 0.1 * rng.standard_normal(15)
    kernel = ConstantKernel(1.0, (1e-3, 20.0)) * Matern(length_scale=[0.3], length_scale_bounds=(0.02, 5.0), nu=2.5) \
        + WhiteKernel(0.1, (1e-6, 5.0))
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, alpha=0.0, n_restarts_optimizer=30, random_state=0)
    gp.fit(xf, yf)
    params = gp.kernel_.get_params()
    out["fit"] = {
        "x": xf.tolist(),
        "y": yf.tolist(),
        "lml": float(gp.log_marginal_likelihood_value_),
        "signal_var": float(params["k1__k1__constant_value"]),
        "length_scales": np.atleast_1d(params["k1__k2__length_scale"]).tolist(),
        "noise_var": float(params["k2__noise_level"]),
    }

    # Expected improvement (maximisation) in closed form.
    ei = []
    for mean, sd, best, xi in [
        (0.0, 1.0, 0.0, 0.0),
        (0.5, 0.2, 0.3, 0.01),
        (0.1, 0.3, 0.9, 0.0),
        (-2.0, 0.5, 1.0, 0.05),
        (3.0, 0.01, 1.0, 0.0),
        (0.97, 0.004, 0.975, 0.001),
        (1.0, 1e-3, 1.0, 0.0),
        (-1.0, 0.25, 0.0, 0.0),
    ]:
        z = (mean - best - xi) / sd
        value = (mean - best - xi) * norm.cdf(z) + sd * norm.pdf(z)
        ei.append({"mean": mean, "sd": sd, "best": best, "xi": xi, "ei": float(value)})
    out["ei"] = ei

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gp_golden.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print("wrote", path, "fit lml", out["fit"]["lml"], gp.kernel_)


if __name__ == "__main__":
    main()
