"""Golden outputs of the seed's fastai augmentation, for
tuner/tests/data_augment_golden.rs.

Part 1 (no argument): the batch transforms on a 7x7 image.

Recomputes fastai's transforms (fastai/vision/augment.py: flip_mat,
rotate_mat, zoom_mat composed as Flip @ Rotate @ Zoom, _WarpCoord with
find_coeffs/apply_perspective, affine_grid + grid_sample with bilinear
sampling, reflection padding and align_corners=True, the Hue transform in
HSV space, and Brightness/Contrast/Saturation in logit space) in float64
PyTorch for fixed parameters, on a 7x7 RGB test image, in the order of
fastai's batch pipeline: geometry (order 30), then the merged
brightness/contrast/saturation LightingTfm, then Hue (both order 40, in that
list order; part 2 prints the order fastai itself builds).

    python3 tuner/tests/data_golden/augment_golden.py > tuner/tests/data_golden/augment_golden.txt

Part 2 (argument `item`): fastai 2.8 itself (not a re-implementation) on a
fixed smooth non-square image, for the item stage: the box that
`Resize(ITEM)` (ResizeMethod.Crop) crops from the original for given random
draws `pcts` in training and in validation, and the final IMAGE-px output of
the validation path `Resize(ITEM)` -> ToTensor -> IntToFloatTensor ->
`RandomResizedCropGPU(IMAGE, min_scale=0.75, ratio=(1,1))` (split_idx=1).
Needs `pip install fastai==2.8.* torch` (CPU is enough).

    python3 tuner/tests/data_golden/augment_golden.py item > tuner/tests/data_golden/item_golden.txt
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
    x = torch.sigmoid(l)
    if p["hue"] != 0:
        hsv = rgb2hsv(x)
        hsv[0] = (hsv[0] + (p["hue"] + 1.0)) % 1.0  # fastai adds exp(U(..)) = shift + 1
        x = hsv2rgb(hsv)
    return x


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

# Part 2: the item stage, from fastai itself.
ITEM, IMAGE = 92, 44  # the seed's 460 -> 224 at 1/5 scale (short side 100 -> 92 as 500 -> 460)
ORIGINALS = [(125, 100), (100, 125)]  # landscape, portrait
TRAIN_PCTS = [(0.0, 0.0), (0.3, 0.7), (0.61, 0.2), (0.999, 0.999)]


def original(w, h):
    """The fixed smooth test image (HWC uint8); tuner/tests/data_augment_golden.rs
    computes the same pixels (floor(v + 0.5) of the same float64 formulas)."""
    import numpy as np

    out = np.zeros((h, w, 3), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            r = 127.5 + 127.5 * math.sin(x / 9.0) * math.cos(y / 13.0)
            g = 127.5 + 127.5 * math.cos(x / 11.0 + y / 17.0)
            b = 127.5 + 127.5 * math.sin((x + 2 * y) / 15.0)
            out[y, x] = [math.floor(v + 0.5) for v in (r, g, b)]
    return out


def item_part():
    import random

    import numpy as np
    import PIL.Image
    import fastai
    from fastai.data.transforms import IntToFloatTensor
    from fastai.vision.augment import Hue, RandomResizedCropGPU, Resize, Saturation, aug_transforms
    from fasttransform import Pipeline
    from fastai.vision.augment import AffineCoordTfm, LightingTfm
    from fastai.vision.core import PILImage, TensorImage, image2tensor

    torch.set_default_dtype(torch.float32)
    print("fastai", fastai.__version__)
    # The seed's batch pipeline, in the order fastai runs it.
    tfms = aug_transforms(size=224, min_scale=0.75, max_rotate=5, min_zoom=0.9, max_zoom=1.1,
                          max_lighting=0.5, max_warp=0.05, p_affine=0.3, p_lighting=0.3,
                          xtra_tfms=[Hue(max_hue=0.3), Saturation(max_lighting=0.3)], pad_mode="zeros")
    pipe = Pipeline(tfms)
    kind = lambda t: ("affine" if isinstance(t, AffineCoordTfm) else "lighting" if isinstance(t, LightingTfm)
                      else type(t).__name__)
    print("order", " ".join(f"{kind(t)}:{t.order}" for t in pipe.fs))
    print("sizes", ITEM, IMAGE)
    boxes = []
    orig_crop = PIL.Image.Image.crop

    def spy(self, box=None):
        boxes.append(tuple(int(v) for v in box))
        return orig_crop(self, box)

    PIL.Image.Image.crop = spy
    try:
        for (w, h) in ORIGINALS:
            img = PILImage.create(original(w, h))
            rs = Resize(ITEM)
            print("original", w, h, int(original(w, h).astype(np.int64).sum()))
            for pct in TRAIN_PCTS:
                random.seed(0)
                rs.before_call(None, 0)  # the training split draws pcts ...
                rs.pcts = pct  # ... here given, as the test gives them
                boxes.clear()
                out = rs.encodes(img)
                assert out.size == (ITEM, ITEM), out.size
                print("box train", pct[0], pct[1], *boxes[-1])
            rs.before_call(None, 1)
            assert rs.pcts == (0.5, 0.5)
            boxes.clear()
            item = rs.encodes(img)
            print("box valid 0.5 0.5", *boxes[-1])
            # The validation path to IMAGE px, through fastai's own transforms.
            x = IntToFloatTensor()(TensorImage(image2tensor(item)))[None]
            crop = RandomResizedCropGPU(IMAGE, min_scale=0.75, ratio=(1, 1))
            y = crop(x, split_idx=1)[0]
            assert tuple(y.shape) == (3, IMAGE, IMAGE), y.shape
            print("valid", " ".join(f"{v:.6f}" for v in y.reshape(-1).tolist()))  # CHW
            # The same without fastai's `_grid_sample` area pre-shrink (it
            # area-averages the item to 2*IMAGE px first when it would shrink
            # by more than 2x): one bilinear sample of fastai's item, the
            # resampling polytune's batch stage does.
            theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
            grid = torch.nn.functional.affine_grid(theta, (1, 3, IMAGE, IMAGE), align_corners=True)
            z = torch.nn.functional.grid_sample(torch.as_tensor(x), grid, mode="bilinear", align_corners=True)[0]
            print("bilinear", " ".join(f"{v:.6f}" for v in z.reshape(-1).tolist()))  # CHW
    finally:
        PIL.Image.Image.crop = orig_crop


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["item"]:
        item_part()
        sys.exit(0)
    img = image()
    print("size", S)
    print("image", " ".join(str(int(v)) for v in img.permute(1, 2, 0).reshape(-1).tolist()))  # HWC
    for name, over in CASES:
        p = dict(BASE, **over)
        print("case", name, " ".join(f"{k}={p[k]!r}" for k in KEYS))
        print("out", " ".join(f"{v:.9f}" for v in run(p).reshape(-1).tolist()))  # CHW
