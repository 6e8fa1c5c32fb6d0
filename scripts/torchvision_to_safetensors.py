#!/usr/bin/env python3
"""Convert a torchvision or timm ResNet checkpoint (.pth) to .safetensors.

The Rust loader (`poly_loss::nn::pretrained`) reads the torchvision
`state_dict` layout (`conv1.weight`, `bn1.running_var`,
`layer2.0.downsample.1.weight`, `fc.bias`, ...); timm's ResNets use the same
names. The script unwraps `{"state_dict": ...}` / `{"model": ...}`
checkpoints, strips a `module.` prefix (DataParallel) and can build the file
straight from torchvision's weight enums (downloads through torchvision's
cache):

    python3 scripts/torchvision_to_safetensors.py resnet50-11ad3fa6.pth resnet50.safetensors
    python3 scripts/torchvision_to_safetensors.py --torchvision resnet50:IMAGENET1K_V2 resnet50.safetensors

Converting a `.pth` needs only the Python standard library: a checkpoint
written by `torch.save` (PyTorch >= 1.6) is a zip archive holding a pickle
and the raw tensor storages, read here with an allow-list of the classes a
state dict may reference (as `torch.load(weights_only=True)` does), so no
code in the file runs. `--torchvision` (and a legacy non-zip checkpoint)
needs torch.

Tensors keep their dtype (float16/bfloat16 are converted to f32 by the Rust
loader; `--float32` converts here instead). Non-contiguous tensors are
written in their logical (row-major) order. The output is written
atomically (a temporary file renamed into place).
"""

import argparse
import array
import collections
import json
import os
import pickle
import struct
import sys
import zipfile

# torch storage class -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}
FLOATS = {"F32", "F64", "F16", "BF16"}


class Storage:
    """One raw storage of a checkpoint: little-endian elements of `dtype`."""

    def __init__(self, dtype, itemsize, data):
        self.dtype, self.itemsize, self.data = dtype, itemsize, data


class Tensor:
    """A dense row-major tensor: safetensors dtype, shape, little-endian bytes."""

    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, list(shape), data

    def is_floating_point(self):
        return self.dtype in FLOATS


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    """`torch._utils._rebuild_tensor_v2`: a (possibly strided) view of a storage,
    materialised in logical order."""
    n = 1
    for d in size:
        n *= d
    k = storage.itemsize
    contiguous, expect = True, 1
    for d, s in zip(reversed(size), reversed(stride)):
        if d != 1 and s != expect:
            contiguous = False
        expect *= d
    if contiguous:
        data = storage.data[offset * k:(offset + n) * k]
    else:
        out = bytearray(n * k)
        index = [0] * len(size)
        for i in range(n):
            src = offset + sum(ix * s for ix, s in zip(index, stride))
            out[i * k:(i + 1) * k] = storage.data[src * k:(src + 1) * k]
            for axis in range(len(size) - 1, -1, -1):
                index[axis] += 1
                if index[axis] < size[axis]:
                    break
                index[axis] = 0
        data = bytes(out)
    if len(data) != n * k:
        raise ValueError(f"a tensor of shape {list(size)} reads past the end of its storage")
    return Tensor(storage.dtype, size, data)


def _rebuild_parameter(data, *_rest):
    """`torch._utils._rebuild_parameter(_with_state)`: a Parameter is its data."""
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if storage_type not in STORAGES:
            raise pickle.UnpicklingError(f"unsupported storage {storage_type!r}")
        dtype, itemsize = STORAGES[storage_type]
        data = self.archive.read(f"{self.prefix}data/{key}")
        if len(data) < numel * itemsize:
            raise ValueError(f"storage {key} holds {len(data)} bytes, needs {numel * itemsize}")
        return Storage(dtype, itemsize, data)


def read_pth(path):
    """The object `torch.save` wrote to `path` (zip format), tensors as `Tensor`."""
    with zipfile.ZipFile(path) as archive:
        pkls = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkls) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {pkls}")
        prefix = pkls[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist():
            order = archive.read(f"{prefix}byteorder").decode().strip()
            if order != "little":
                raise ValueError(f"{path}: {order}-endian checkpoints are not supported")
        with archive.open(pkls[0]) as f:
            return _Unpickler(f, archive, prefix).load()


def from_torch(t):
    """A torch tensor as `Tensor` (for `--torchvision` and legacy checkpoints)."""
    import torch

    names = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
             torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    t = t.detach().cpu().contiguous()
    raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    return Tensor(names[t.dtype], t.shape, raw.numpy().tobytes())


def load_state_dict(src, torchvision_spec):
    """The checkpoint's state dict: wrappers removed, `module.` prefixes stripped."""
    if torchvision_spec:
        import torchvision

        arch, _, weights = torchvision_spec.partition(":")
        model = getattr(torchvision.models, arch)(weights=weights or "DEFAULT")
        return {k: from_torch(v) for k, v in model.state_dict().items()}
    if zipfile.is_zipfile(src):
        sd = read_pth(src)
    else:
        import torch  # pre-1.6 pickle format: only torch reads it

        sd = torch.load(src, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise ValueError(f"{src}: not a state dict (a {type(sd).__name__})")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            v = from_torch(v)
        out[k.removeprefix("module.")] = v
    return out


def to_float32(t):
    """`t` as F32 (floating tensors only)."""
    n = len(t.data) // {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}[t.dtype]
    if t.dtype == "F32":
        return t
    if t.dtype == "F64":
        values = struct.unpack(f"<{n}d", t.data)
    elif t.dtype == "F16":
        values = struct.unpack(f"<{n}e", t.data)
    else:  # BF16: the top half of an f32
        values = [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                  for h in struct.unpack(f"<{n}H", t.data)]
    a = array.array("f", values)
    if sys.byteorder != "little":
        a.byteswap()
    return Tensor("F32", t.shape, a.tobytes())


def save_safetensors(tensors, dst):
    """Writes `tensors` ({name: Tensor}) as safetensors, atomically."""
    header, offset = {}, 0
    names = sorted(tensors)
    for k in names:
        t = tensors[k]
        header[k] = {"dtype": t.dtype, "shape": t.shape,
                     "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = f"{dst}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for k in names:
            f.write(tensors[k].data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", help="checkpoint .pth (a state_dict)")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--torchvision", metavar="ARCH:WEIGHTS", help="e.g. resnet50:IMAGENET1K_V2")
    ap.add_argument("--float32", action="store_true", help="convert floating tensors to float32")
    args = ap.parse_args()
    if (args.src is None) == (args.torchvision is None):
        ap.error("give either a checkpoint path or --torchvision ARCH:WEIGHTS")
    try:
        sd = load_state_dict(args.src, args.torchvision)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        sys.exit(f"error: {args.src or args.torchvision}: {e}")
    if args.float32:
        sd = {k: to_float32(v) if v.is_floating_point() else v for k, v in sd.items()}
    save_safetensors(sd, args.dst)
    print(f"wrote {len(sd)} tensors to {args.dst}")


if __name__ == "__main__":
    main()
