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


LPIPS_INSTALL_HINT = 'pip install "lpips==0.1.4"'
LPIPS_TRUNK_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
"""The lpips package's VGG16 slices: torchvision's ``features[a:b]``, ending at relu1_2 ... relu5_3 (VGG16_TAPS)."""


def import_lpips():
    """The lpips package (heavy: imported only here), with the install hint when it is missing."""
    try:
        import lpips
    except ImportError as err:
        raise ImportError(f"LPIPS needs the package lpips: {LPIPS_INSTALL_HINT} (scripts/setup.sh installs it)."
                          ) from err
    return lpips


def lpips_linear_weights_file() -> Path:
    """The learned LPIPS-VGG channel weights (v0.1) that ship inside the lpips package (no download)."""
    return Path(import_lpips().__file__).parent / "weights" / "v0.1" / "vgg.pth"


def lpips_vgg(vgg: Union[str, Path, nn.Module], spatial: bool = False) -> nn.Module:
    """The lpips package's LPIPS-VGG (v0.1, Zhang et al. 2018) with its shipped linear weights and the VGG16 trunk
    from a local torchvision state dict (``--vgg``, e.g. vgg16-397923af.pth: the file ``lpips`` itself would fetch
    through torchvision) or an already loaded ``features`` module (indices 0..29).

    Nothing is downloaded: the package's network is built on the meta device (so torchvision's VGG16 classifier is
    never allocated), its five trunk slices take the given VGG layers, and its linear layers take the package's
    weights. Call it as the package documents: ``net(x, y)`` for images in [-1, 1], [B,1,1,1] distances
    (``spatial=True``: [B,1,H,W] maps, each layer's map upsampled to the image size before the sum).
    """
    lpips = import_lpips()
    features = vgg if isinstance(vgg, nn.Module) else load_vgg16_features(vgg, upto=max(VGG16_TAPS.values()))
    if len(features) < LPIPS_TRUNK_SLICES[-1][1]:
        raise ValueError(f"LPIPS-VGG needs VGG16 features up to relu5_3 (index 29); got {len(features)} layers.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes on lpips' `pretrained=` argument
        with torch.device("meta"):
            net = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, use_dropout=False, spatial=spatial,
                              verbose=False)
    slices = [net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5]
    for block, (start, stop) in zip(slices, LPIPS_TRUNK_SLICES):
        for index in range(start, stop):
            setattr(block, str(index), features[index])
    path = lpips_linear_weights_file()
    state = read_weights_file(path, "LPIPS linear layers (lpips package)",
                              hint=f"Reinstall lpips: {LPIPS_INSTALL_HINT}.")
    for i, lin in enumerate(net.lins):
        weight = state.get(f"lin{i}.model.1.weight") if isinstance(state, dict) else None
        conv = lin.model[0]
        if weight is None or tuple(weight.shape) != (1, conv.in_channels, 1, 1):
            raise WeightsFileError(f"{path} lacks lin{i}.model.1.weight [1,{conv.in_channels},1,1]; reinstall lpips.")
        conv.weight = nn.Parameter(weight.float().clone(), requires_grad=False)
    # the package's input scaling: (x - shift) / scale == imagenet_normalize(x), built by the package on the CPU
    net.scaling_layer = lpips.ScalingLayer()
    left = [name for name, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"lpips_vgg: parameters left unset on the meta device: {left[:4]}")
    net.eval()
    net.requires_grad_(False)
    return net


class PerceptualLoss(nn.Module):
    """Perceptual distance on VGG16 features in the LPIPS form (Zhang et al. 2018):

        d(x, y) = sum_l mean_hw( sum_c w_lc (f̂_l(x) - f̂_l(y))^2 ),  f̂ = channel-unit-normalised features,

    with the taps relu1_2 ... relu5_3. By default the channels are weighted uniformly (w_lc = 1/C_l), over any
    subset of the taps: a VGG feature distance, not LPIPS (the lpips package has no uniform-weight mode: its
    ``lpips=False`` baseline sums the channels). With ``lpips=True`` the distance IS LPIPS-VGG and is computed by the
    lpips package itself (:func:`lpips_vgg`: its learned w_lc, all five taps). Inputs in [-1,1] are ImageNet-
    normalised (identical to LPIPS' scaling layer). With no VGG the loss is 0 and one warning is issued.

    Args:
        vgg: path to torchvision vgg16 weights, an already built `features` module, or None (term off).
        lpips: use the lpips package's LPIPS-VGG (learned channel weights) instead of uniform weights.
        taps: which ReLU outputs to compare (all five with ``lpips=True``).
    """

    def __init__(self, vgg: PathOrModule, lpips: bool = False, taps: Sequence[str] = tuple(VGG16_TAPS)) -> None:
        super().__init__()
        unknown = [t for t in taps if t not in VGG16_TAPS]
        if unknown:
            raise ValueError(f"unknown VGG16 taps {unknown}; choose from {list(VGG16_TAPS)}")
        self.tap_indices = sorted(VGG16_TAPS[t] for t in taps)
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
        self.lpips_net: Optional[nn.Module] = None
        if lpips and self.features is not None:
            if sorted(taps) != sorted(VGG16_TAPS):
                raise ValueError("PerceptualLoss(lpips=True) compares all five VGG16 taps; leave `taps` at its "
                                 "default.")
            self.lpips_net = lpips_vgg(self.features)

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
        if self.lpips_net is not None:
            return self.lpips_net(pred, target).mean()
        fp = self.taps(pred)
        with torch.enable_grad() if target.requires_grad else torch.no_grad():
            ft = self.taps(target)
        total = pred.new_zeros(())
        for a, b in zip(fp, ft):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            per_pixel = ((a - b) ** 2).mean(1)
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
    lpips: bool = False
    """Make the perceptual term LPIPS-VGG, computed by the lpips package with its shipped channel weights (default:
    the uniform-weight VGG distance)."""
    arcface_path: Optional[Path] = None
    """ArcFace IR-SE50 state dict (model_ir_se50.pth); None switches the identity term off."""

    def setup(self) -> "ReconstructionLoss":
        return self._target(self)


class ReconstructionLoss(nn.Module):
    """pixel_weight * L2 + perceptual_weight * perceptual + identity_weight * identity; returns the terms too."""

    def __init__(self, config: ReconstructionLossConfig) -> None:
        super().__init__()
        self.config = config
        self.perceptual = PerceptualLoss(config.vgg_path, lpips=config.lpips) if config.perceptual_weight > 0 else None
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
    "lpips_vgg",
    "lpips_linear_weights_file",
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
