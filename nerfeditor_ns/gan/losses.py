"""Image losses of the GAN side: pixel (L2), perceptual (VGG16), identity (ArcFace).

Used by the inversion (Sec. 3.2: encoder refinement, optimisation-based projection) and by the latent code
adjustor's reconstruction term (Eq. 1: L2 + perceptual + identity + entropy; the entropy term lives with the
adjustor). The networks come from explicit local files; when one is not given its term is switched off with
one warning and the loss returns 0.

Conventions: images are [B,3,H,W] in [-1,1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.arcface import ARCFACE_FLAG
from nerfeditor_ns.gan.irse import WeightsFileError, load_exact_state, read_weights_file, strip_prefix

VGG_FLAG = "--vgg"  # the ns-edit option (or $NERFEDITOR_VGG)
LPIPS_LIN_FLAG = "lpips_lin_path"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Indices of the ReLU outputs in torchvision's vgg16().features used as perceptual taps (as in LPIPS-VGG).
VGG16_TAPS: Dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}

# The e4e/pSp identity-loss face crop of a 256x256 aligned image (rows 35:223, cols 32:220), pooled to 112.
ID_CROP_ROWS = (35, 223)
ID_CROP_COLS = (32, 220)

PathOrModule = Union[str, Path, nn.Module, None]


def pixel_loss(
    pred: Float[Tensor, "B C H W"], target: Float[Tensor, "B C H W"], mask: Optional[Float[Tensor, "B 1 H W"]] = None
) -> Float[Tensor, ""]:
    """Mean squared error, optionally restricted to mask > 0 (mask-weighted mean over the masked pixels)."""
    if pred.shape != target.shape:
        raise ValueError(f"pixel_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    sq = (pred - target) ** 2
    if mask is None:
        return sq.mean()
    m = mask.expand_as(sq)
    return (sq * m).sum() / m.sum().clamp_min(1e-8)


class PixelLoss(nn.Module):
    """Module form of `pixel_loss` (L2)."""

    def forward(self, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return pixel_loss(pred, target, mask)


def resize_square(img: Float[Tensor, "B C H W"], size: int) -> Float[Tensor, "B C size size"]:
    """Resize to size x size for comparison (area averaging when shrinking, bilinear when enlarging)."""
    if img.shape[-2:] == (size, size):
        return img
    if img.shape[-1] > size:
        return F.interpolate(img, size=(size, size), mode="area")
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)


def imagenet_normalize(x: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
    """[-1,1] images -> ImageNet-normalised input of torchvision VGG: ((x+1)/2 - mean) / std."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1.0) * 0.5 - mean) / std


def load_vgg16_features(path: Union[str, Path], upto: int = 29) -> nn.Sequential:
    """`torchvision.models.vgg16(weights=None).features[:upto+1]` with weights from a local state-dict file.

    The file is torchvision's `vgg16-397923af.pth` layout (`features.N.weight/bias`, classifier keys ignored) or a
    bare `features` state dict (`N.weight`). Returned frozen, in eval mode.
    """
    import torchvision  # heavy: only here

    obj = read_weights_file(path, "VGG16", VGG_FLAG)
    if not isinstance(obj, dict):
        raise WeightsFileError(f"VGG16 file '{path}' is not a state dict. Pass torchvision's vgg16 weights with {VGG_FLAG}.")
    state = strip_prefix(obj, "features.") or {k: v for k, v in obj.items() if k.split(".")[0].isdigit()}
    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features[: upto + 1]
    wanted = set(features.state_dict().keys())
    state = {k: v for k, v in state.items() if k in wanted}
    if not state:
        raise WeightsFileError(
            f"VGG16 file '{path}' has no 'features.N.weight' entries (torchvision vgg16 layout expected, e.g. "
            f"vgg16-397923af.pth). Pass it with {VGG_FLAG}."
        )
    load_exact_state(features, state, "VGG16", path)
    features.eval()
    features.requires_grad_(False)
    return features


def _load_lpips_lin(path: Union[str, Path], layers: Sequence[int], channels: Sequence[int]) -> list:
    """The LPIPS linear-layer weights of the given tap numbers (0 = relu1_2 ... 4 = relu5_3) from the lpips
    package's `weights/v0.1/vgg.pth` (`linN.model.1.weight` [1,C,1,1])."""
    obj = read_weights_file(path, "LPIPS linear layers", LPIPS_LIN_FLAG)
    out = []
    for i, c in zip(layers, channels):
        key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.model.0.weight") if isinstance(obj, dict) and k in obj), None)
        if key is None or tuple(obj[key].shape) != (1, c, 1, 1):
            raise WeightsFileError(
                f"LPIPS file '{path}' lacks 'lin{i}.model.1.weight' of shape [1,{c},1,1] (lpips vgg.pth layout). "
                f"Pass it with {LPIPS_LIN_FLAG} or leave it out for uniform channel weights."
            )
        out.append(obj[key].float().clone())
    return out


class PerceptualLoss(nn.Module):
    """Perceptual distance on VGG16 features in the LPIPS form (Zhang et al. 2018):

        d(x, y) = sum_l mean_hw( sum_c w_lc (f̂_l(x) - f̂_l(y))^2 ),  f̂ = channel-unit-normalised features,

    with the taps relu1_2 ... relu5_3. With the LPIPS linear weights (`lin_path`, lpips' `vgg.pth`) this is
    LPIPS-VGG; without them the channels are weighted uniformly (w_lc = 1/C_l). Inputs in [-1,1] are ImageNet-
    normalised (identical to LPIPS' scaling layer). With no VGG the loss is 0 and one warning is issued.

    Args:
        vgg: path to torchvision vgg16 weights, an already built `features` module, or None (term off).
        lin_path: optional lpips linear-layer weights.
        taps: which ReLU outputs to compare.
    """

    def __init__(self, vgg: PathOrModule, lin_path: Union[str, Path, None] = None,
                 taps: Sequence[str] = tuple(VGG16_TAPS)) -> None:
        super().__init__()
        unknown = [t for t in taps if t not in VGG16_TAPS]
        if unknown:
            raise ValueError(f"unknown VGG16 taps {unknown}; choose from {list(VGG16_TAPS)}")
        self.tap_indices = sorted(VGG16_TAPS[t] for t in taps)
        lin_numbers = [sorted(VGG16_TAPS.values()).index(i) for i in self.tap_indices]
        self.features: Optional[nn.Module]
        if vgg is None:
            warnings.warn(
                f"No VGG16 weights given ({VGG_FLAG}): the perceptual loss is switched off.", stacklevel=2
            )
            self.features = None
        elif isinstance(vgg, nn.Module):
            self.features = vgg
        else:
            self.features = load_vgg16_features(vgg, upto=max(self.tap_indices))
        self.lin: Optional[nn.ParameterList] = None
        if lin_path is not None and self.features is not None:
            channels = [self._tap_channels(i) for i in self.tap_indices]
            self.lin = nn.ParameterList(
                [nn.Parameter(w, requires_grad=False) for w in _load_lpips_lin(lin_path, lin_numbers, channels)]
            )

    def _tap_channels(self, index: int) -> int:
        assert self.features is not None
        for j in range(index, -1, -1):
            layer = self.features[j]
            if isinstance(layer, nn.Conv2d):
                return layer.out_channels
        raise ValueError("no conv before tap")

    @property
    def enabled(self) -> bool:
        return self.features is not None

    def taps(self, x: Float[Tensor, "B 3 H W"]) -> list:
        """VGG16 feature maps at the taps, for [-1,1] images."""
        assert self.features is not None
        h = imagenet_normalize(x)
        out = []
        last = max(self.tap_indices)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.tap_indices:
                out.append(h)
            if i >= last:
                break
        return out

    def forward(self, pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Float[Tensor, ""]:
        if self.features is None:
            return pred.new_zeros(())
        if pred.shape != target.shape:
            raise ValueError(f"PerceptualLoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        fp = self.taps(pred)
        with torch.enable_grad() if target.requires_grad else torch.no_grad():
            ft = self.taps(target)
        total = pred.new_zeros(())
        for li, (a, b) in enumerate(zip(fp, ft)):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = (a - b) ** 2
            if self.lin is not None:
                per_pixel = (d * self.lin[li]).sum(1)
            else:
                per_pixel = d.mean(1)
            total = total + per_pixel.mean(dim=(1, 2)).mean()
        return total


def id_crop(img: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 112 112"]:
    """e4e/pSp identity-loss input: resize to 256 if needed, crop [35:223, 32:220], adaptive-avg-pool to 112."""
    if img.shape[-2:] != (256, 256):
        img = F.interpolate(img, size=(256, 256), mode="bilinear", align_corners=False, antialias=img.shape[-1] > 256)
    crop = img[:, :, ID_CROP_ROWS[0] : ID_CROP_ROWS[1], ID_CROP_COLS[0] : ID_CROP_COLS[1]]
    return F.adaptive_avg_pool2d(crop, (112, 112))


class IdentityLoss(nn.Module):
    """Identity loss 1 - cos(A(crop(pred)), A(crop(target))) averaged over the batch (e4e/pSp convention:
    target embedding detached, 256-px aligned face cropped to [35:223, 32:220] and pooled to 112).
    With no ArcFace the loss is 0 and one warning is issued.

    Args:
        arcface: path to `model_ir_se50.pth`, an already loaded ArcFace module, or None (term off).
    """

    def __init__(self, arcface: PathOrModule) -> None:
        super().__init__()
        self.net: Optional[nn.Module]
        if arcface is None:
            warnings.warn(
                f"No ArcFace IR-SE50 weights given ({ARCFACE_FLAG}): the identity loss is switched off.", stacklevel=2
            )
            self.net = None
        elif isinstance(arcface, nn.Module):
            self.net = arcface
        else:
            from nerfeditor_ns.gan.arcface import load_arcface

            self.net = load_arcface(arcface)

    @property
    def enabled(self) -> bool:
        return self.net is not None

    def embed(self, img: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 512"]:
        assert self.net is not None
        return self.net(id_crop(img))

    def forward(self, pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Float[Tensor, ""]:
        if self.net is None:
            return pred.new_zeros(())
        with torch.no_grad():
            et = self.embed(target)
        ep = self.embed(pred)
        return (1.0 - (ep * et).sum(dim=1)).mean()


@dataclass
class ReconstructionLossConfig:
    """Weights and network files of the pixel + perceptual + identity reconstruction loss."""

    _target: Type = field(default_factory=lambda: ReconstructionLoss)
    pixel_weight: float = 1.0
    """Weight of the L2 pixel term."""
    perceptual_weight: float = 0.8
    """Weight of the VGG16 perceptual term (e4e uses 0.8 for its LPIPS term)."""
    identity_weight: float = 0.1
    """Weight of the ArcFace identity term."""
    vgg_path: Optional[Path] = None
    """torchvision vgg16 state dict (e.g. vgg16-397923af.pth); None switches the perceptual term off."""
    lpips_lin_path: Optional[Path] = None
    """Optional LPIPS linear-layer weights (lpips' weights/v0.1/vgg.pth) to turn the perceptual term into LPIPS-VGG."""
    arcface_path: Optional[Path] = None
    """ArcFace IR-SE50 state dict (model_ir_se50.pth); None switches the identity term off."""

    def setup(self) -> "ReconstructionLoss":
        return self._target(self)


class ReconstructionLoss(nn.Module):
    """pixel_weight * L2 + perceptual_weight * perceptual + identity_weight * identity; returns the terms too."""

    def __init__(self, config: ReconstructionLossConfig) -> None:
        super().__init__()
        self.config = config
        self.perceptual = PerceptualLoss(config.vgg_path, config.lpips_lin_path) if config.perceptual_weight > 0 else None
        self.identity = IdentityLoss(config.arcface_path) if config.identity_weight > 0 else None

    def forward(self, pred: Tensor, target: Tensor) -> Dict[str, Tensor]:
        terms = {"pixel": pixel_loss(pred, target)}
        total = self.config.pixel_weight * terms["pixel"]
        if self.perceptual is not None and self.perceptual.enabled:
            terms["perceptual"] = self.perceptual(pred, target)
            total = total + self.config.perceptual_weight * terms["perceptual"]
        if self.identity is not None and self.identity.enabled:
            terms["identity"] = self.identity(pred, target)
            total = total + self.config.identity_weight * terms["identity"]
        terms["total"] = total
        return terms


__all__ = [
    "pixel_loss",
    "PixelLoss",
    "imagenet_normalize",
    "resize_square",
    "load_vgg16_features",
    "PerceptualLoss",
    "IdentityLoss",
    "id_crop",
    "ReconstructionLoss",
    "ReconstructionLossConfig",
    "VGG16_TAPS",
]


LossFn = Callable[[Tensor, Tensor], Union[Tensor, Dict[str, Tensor]]]
"""A reconstruction loss: (prediction, target) -> a scalar or a dict of terms with the key "total"."""


def reconstruction_terms(loss: Optional[LossFn], pred: Tensor, target: Tensor) -> Dict[str, Tensor]:
    """The terms of ``loss(pred, target)`` as a dict with "total" (plain MSE as "pixel" when ``loss`` is None)."""
    if loss is None:
        mse = F.mse_loss(pred, target)
        return {"pixel": mse, "total": mse}
    out = loss(pred, target)
    if isinstance(out, dict):
        if "total" not in out:
            raise ValueError("a reconstruction loss returning a dict must include the key 'total'.")
        return out
    return {"total": out}
