"""Golden outputs of the seed's fastai batch augmentation, for
tuner/tests/data_augment_golden.rs.

Recomputes fastai's transforms (fastai/vision/augment.py: flip_mat,
rotate_mat, zoom_mat composed as Flip @ Rotate @ Zoom, _WarpCoord with
find_coeffs/apply_perspective, affine_grid + grid_sample with bilinear
sampling, reflection padding and align_corners=True, the Hue transform in
HSV space, and Brightness/Contrast/Saturation in logit space) in float64
PyTorch for fixed parameters, on a 7x7 RGB test image.

    python3 tuner/tests/data_golden/augment_golden.py > tuner/tests/data_golden/augment_golden.txt
"""
import math

import torch

torch.set_default_dtype(torch.float64)
S = 7


def image():
    v = [[[(i * 37 + j * 11 + c * 71 + i * j * 5) % 256 for j in range(S)] for i in range(S)] for c in range(3)]
    return torch.tensor(v, dtype=torch.float64)  # C,H,W in 0..255


def affine(flip, rot_deg, zoom, cx, cy):
    f = -1.0 if flip else 1.0
    F = torch.tensor([[f, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    t = rot_deg * math.pi / 180
    R = torch.tensor([[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0], [0, 0, 1.0]])
    s = 1 / zoom
    Z = torch.tensor([[s, 0, (1 - s) * (2 * cx - 1)], [0, s, (1 - s) * (2 * cy - 1)], [0, 0, 1.0]])
    return F @ R @ Z


def find_coeffs(p1, p2):
    m = []
    for i in range(4):
        m.append([p2[i][0], p2[i][1], 1, 0, 0, 0, -p1[i][0] * p2[i][0], -p1[i][0] * p2[i][1]])
        m.append([0, 0, 0, p2[i][0], p2[i][1], 1, -p1[i][1] * p2[i][0], -p1[i][1] * p2[i][1]])
    A = torch.tensor(m, dtype=torch.float64)
    B = torch.tensor(p1, dtype=torch.float64).reshape(8)
    return torch.linalg.solve(A, B)


def warp(coords, xt, yt):
    orig = [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    targ = [[-1 - yt, -1 - xt], [-1 + yt, 1 + xt], [1 + yt, -1 + xt], [1 - yt, 1 - xt]]
    c = find_coeffs(orig, targ)
    c = torch.cat([c, torch.ones(1)]).reshape(3, 3)
    sz = coords.shape
    pts = coords.reshape(-1, 2)
    p1 = pts @ c[:, :2].T + c[:, 2]
    return (p1[:, :2] / p1[:, 2:3]).reshape(sz)


def rgb2hsv(img):
    r, g, b = img.unbind(0)
    maxc = img.max(0).values
    minc = img.min(0).values
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / torch.where(eqc, torch.ones(()), maxc)
    d = torch.where(eqc, torch.ones(()), cr)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = (maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc) + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc))


def hsv2rgb(img):
    h, s, v = img.unbind(0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(3, *h.shape)
    for k, (a, b, c) in enumerate(table):
        m = i == k
        out[0][m], out[1][m], out[2][m] = a[m], b[m], c[m]
    return out


def logit(x):
    x = x.clamp(1e-7, 1 - 1e-7)
    return -(1 / x - 1).log()


def run(p):
    x = image() / 255.0
    if p["hue"] != 0:
        hsv = rgb2hsv(x)
        hsv[0] = (hsv[0] + (p["hue"] + 1.0)) % 1.0  # fastai adds exp(U(..)) = shift + 1
        x = hsv2rgb(hsv)
    m = affine(p["flip"], p["rot"], p["zoom"], p["cx"], p["cy"])
    coords = torch.nn.functional.affine_grid(m[:2].unsqueeze(0), (1, 3, S, S), align_corners=True)
    if p["wx"] != 0 or p["wy"] != 0:
        coords = warp(coords, p["wx"], p["wy"])
    x = torch.nn.functional.grid_sample(x.unsqueeze(0), coords, mode="bilinear", padding_mode="reflection",
                                        align_corners=True)[0]
    l = (logit(x) + logit(torch.tensor(p["b"]))) * p["c"]
    if p["s"] != 1:
        g = (l * torch.tensor([0.2989, 0.5870, 0.1140])[:, None, None]).sum(0)
        l = l * p["s"] + g * (1 - p["s"])
    return torch.sigmoid(l)


BASE = dict(flip=0, rot=0.0, zoom=1.0, cx=0.5, cy=0.5, wx=0.0, wy=0.0, b=0.5, c=1.0, s=1.0, hue=0.0)
CASES = [
    ("flip", dict(flip=1)),
    ("rotate", dict(rot=4.3)),
    ("zoom", dict(zoom=1.08, cx=0.2, cy=0.7)),
    ("zoom_out", dict(zoom=0.91, cx=0.9, cy=0.1)),
    ("warp", dict(wx=0.1, wy=-0.06)),
    ("affine_warp", dict(flip=1, rot=-3.1, zoom=0.95, cx=0.6, cy=0.4, wx=0.05, wy=0.08)),
    ("lighting", dict(b=0.62, c=1.37)),
    ("saturation", dict(s=0.78)),
    ("hue", dict(hue=0.21)),
    ("hue_neg", dict(hue=-0.27)),
    ("everything", dict(flip=1, rot=2.2, zoom=1.04, cx=0.3, cy=0.8, wx=-0.04, wy=0.02, b=0.41, c=0.8, s=1.2, hue=0.1)),
]
KEYS = list(BASE)

if __name__ == "__main__":
    img = image()
    print("size", S)
    print("image", " ".join(str(int(v)) for v in img.permute(1, 2, 0).reshape(-1).tolist()))  # HWC
    for name, over in CASES:
        p = dict(BASE, **over)
        print("case", name, " ".join(f"{k}={p[k]!r}" for k in KEYS))
        print("out", " ".join(f"{v:.9f}" for v in run(p).reshape(-1).tolist()))  # CHW
