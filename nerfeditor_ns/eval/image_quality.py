"""PSNR, SSIM and LPIPS restricted to an image region (paper Sec. 4, Tab. 2: PSNR / SSIM / LPIPS).

Images are float [N, H, W, 3] in [0, 1]; a region is a mask [N, H, W, 1] (or [N, H, W]) whose pixels with value
> 0.5 belong to it (soft guide masks are thresholded at 0.5). For a pair (``a``, ``b``) and a region ``R``:

- ``a_R = where(R, a, b)``: ``a`` inside the region, ``b`` outside it, so that nothing outside the region can
  differ (SSIM windows and LPIPS receptive fields reach across the region's border; without this, a change inside
  the mask would leak into an "outside the mask" figure and vice versa).
- **PSNR** per view: ``10 log10(1 / MSE)``, MSE the mean of ``(a - b)^2`` over the region's pixels and the 3
  channels, floored at 1e-10 (identical images: 100 dB).
- **SSIM** per view: the mean over the region's pixels and the 3 channels of the SSIM map of ``(a_R, b)``, computed
  by torchmetrics (``structural_similarity_index_measure``, Gaussian window sigma 1.5 / 11 taps, k1 0.01, k2 0.03,
  data range 1, reflection padding, so the map has one value per pixel).
- **LPIPS** per view: the mean over the region's pixels of the lpips package's spatial LPIPS-VGG map of
  ``(a_R, b)`` (each layer's distance map upsampled to the image size and summed over the layers), through
  :func:`nerfeditor_ns.gan.losses.lpips_vgg` (the package's network and channel weights, VGG16 trunk from ``--vgg``).

Each figure is reported per view and as the mean over the views whose region is not empty (views with an empty
region are left out and counted in ``empty_views``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from jaxtyping import Float
from torch import Tensor

MSE_FLOOR = 1e-10
"""Smallest MSE used in a PSNR (identical images give 100 dB), as in nerfeditor_ns.eval.metrics."""
MASK_THRESHOLD = 0.5
"""A pixel belongs to a region when its mask value is above this."""
SSIM_SIGMA = 1.5
"""Standard deviation (pixels) of SSIM's Gaussian window (Wang et al. 2004)."""


def region_of(mask: Optional[Tensor], like: Float[Tensor, "N H W 3"]) -> Float[Tensor, "N H W 1"]:
    """The hard region (1 inside, 0 outside) of a mask [N,H,W,1] / [N,H,W]; everything when ``mask`` is None."""
    if like.ndim != 4 or like.shape[-1] != 3:
        raise ValueError(f"Expected images [N, H, W, 3], got {tuple(like.shape)}.")
    if mask is None:
        return torch.ones_like(like[..., :1])
    mask = mask.detach().float().to(like.device)
    if mask.ndim == 3:
        mask = mask[..., None]
    if mask.shape != like.shape[:-1] + (1,):
        raise ValueError(f"Mask shape {tuple(mask.shape)} does not fit images {tuple(like.shape)}.")
    return (mask > MASK_THRESHOLD).to(like.dtype)


def _pair(a: Tensor, b: Tensor, name: str):
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected two [N, H, W, 3] image batches of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    return a.detach().float().cpu(), b.detach().float().cpu()


def restrict(a: Float[Tensor, "N H W 3"], b: Float[Tensor, "N H W 3"], region: Float[Tensor, "N H W 1"]) -> Tensor:
    """``a`` inside the region, ``b`` outside it (so that only the region can differ from ``b``)."""
    return torch.where(region > 0.5, a, b)


def region_mean(values: Float[Tensor, "N H W C"], region: Float[Tensor, "N H W 1"]) -> Float[Tensor, "N"]:
    """Mean of a per-pixel map over each view's region and the channels (NaN for an empty region)."""
    weight = region.expand_as(values)
    count = weight.sum(dim=(1, 2, 3))
    total = (values * weight).sum(dim=(1, 2, 3))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def region_psnr(a: Float[Tensor, "N H W 3"], b: Float[Tensor, "N H W 3"], mask: Optional[Tensor] = None
                ) -> Float[Tensor, "N"]:
    """Per-view PSNR (dB) over the region (NaN where it is empty)."""
    a, b = _pair(a, b, "region_psnr")
    err = region_mean((a - b) ** 2, region_of(mask, a)).double()
    return (10.0 * torch.log10(1.0 / err.clamp_min(MSE_FLOOR))).float()


def ssim_map(a: Float[Tensor, "N H W 3"], b: Float[Tensor, "N H W 3"]) -> Float[Tensor, "N H W 3"]:
    """torchmetrics' SSIM map (one value per pixel and channel) of two [0, 1] image batches."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pair(a, b, "ssim_map")
    if min(a.shape[1], a.shape[2]) < 6:
        raise ValueError(f"SSIM needs images of at least 6 x 6 pixels (its 11-tap window), got {tuple(a.shape[1:3])}.")
    _, full = structural_similarity_index_measure(
        a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), gaussian_kernel=True, sigma=SSIM_SIGMA, data_range=1.0,
        k1=0.01, k2=0.03, return_full_image=True,
    )
    return full.permute(0, 2, 3, 1)


def region_ssim(a: Float[Tensor, "N H W 3"], b: Float[Tensor, "N H W 3"], mask: Optional[Tensor] = None
                ) -> Float[Tensor, "N"]:
    """Per-view SSIM over the region: the SSIM map of (a restricted to the region, b) averaged over it."""
    a, b = _pair(a, b, "region_ssim")
    region = region_of(mask, a)
    return region_mean(ssim_map(restrict(a, b, region), b), region)


def region_lpips(
    lpips_net: Callable[[Tensor, Tensor], Tensor],
    a: Float[Tensor, "N H W 3"],
    b: Float[Tensor, "N H W 3"],
    mask: Optional[Tensor] = None,
    batch: int = 8,
) -> Float[Tensor, "N"]:
    """Per-view LPIPS over the region: the spatial LPIPS map of (a restricted to the region, b) averaged over it.

    ``lpips_net`` is a spatial LPIPS network (``lpips_vgg(vgg, spatial=True)``) taking [B,3,H,W] images in [-1, 1]
    and returning [B,1,H,W] maps."""
    a, b = _pair(a, b, "region_lpips")
    region = region_of(mask, a)
    a_r = restrict(a, b, region)
    param = next(iter(getattr(lpips_net, "parameters", lambda: iter(()))()), None)
    device = param.device if param is not None else torch.device("cpu")
    maps: List[Tensor] = []
    with torch.inference_mode():
        for start in range(0, a.shape[0], batch):
            x = a_r[start : start + batch].permute(0, 3, 1, 2).to(device) * 2 - 1
            y = b[start : start + batch].permute(0, 3, 1, 2).to(device) * 2 - 1
            out = lpips_net(x, y).float().cpu()
            if out.shape != (x.shape[0], 1, x.shape[2], x.shape[3]):
                raise ValueError(f"region_lpips needs a spatial LPIPS network ([B,1,H,W] maps), got "
                                 f"{tuple(out.shape)}.")
            maps.append(out.permute(0, 2, 3, 1))
    return region_mean(torch.cat(maps), region)


def summary(per_view: Float[Tensor, "N"]) -> Dict[str, object]:
    """``value`` (mean over the views with a non-empty region), ``per_view`` (None for empty ones), ``views``,
    ``empty_views``."""
    values = [float(v) for v in per_view.reshape(-1)]
    finite = [v for v in values if v == v]  # NaN marks an empty region
    return {
        "value": sum(finite) / len(finite) if finite else None,
        "per_view": [v if v == v else None for v in values],
        "views": len(finite),
        "empty_views": len(values) - len(finite),
    }
