"""Kernel Inception Distance of rendered views against the captured images (paper Tab. 3 / 5 report FID before and
after the edit; KID is used here, see below).

**KID** (Bińkowski et al. 2018): the unbiased estimate of the squared maximum mean discrepancy between the
InceptionV3 pool features (2048-d) of the real images ``X`` (the captures) and of the rendered images ``Y`` (at the
same training cameras), with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``:

    KID = 1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i, j} k(x_i, y_j)

computed by torchmetrics (``torchmetrics.image.kid.poly_mmd``) over ALL m pairs at once (no random subsets, so the
figure is deterministic). It is ~0 for two samples of one distribution (it can be slightly negative: it is
unbiased) and grows as the rendered images drift away from the captures. ``before`` = the original run's renders,
``after`` = the edited run's renders; the difference is what the edit did to the image statistics.

**Why KID and not FID**: a capture has tens of images, far fewer than the 2048 feature dimensions. FID fits a
2048 x 2048 covariance to each set, which is singular and strongly biased at that size (its value depends on the
number of images); KID is an unbiased estimate for any number of images >= 2 and needs no covariance.

**Features**: torchmetrics' InceptionV3 (``NoTrainInceptionV3``, the network of torch-fidelity, the port of the
TensorFlow FID Inception), images as uint8, resized to 299 x 299 by torchmetrics (bilinear, antialiased). Its
weights come from a local file (``--inception``): torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``,
the file torchmetrics would otherwise download. The file is checked with weights-only unpickling before
torch-fidelity reads it. Without the file KID is switched off (nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

INCEPTION_FLAG = "--inception"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's InceptionV3 weights (the file torchmetrics' FID / KID download)."""
INCEPTION_FEATURE = "2048"


def kernel_inception_distance(real: Float[Tensor, "M D"], fake: Float[Tensor, "M D"]) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel over all pairs (torchmetrics' ``poly_mmd``)."""
    from torchmetrics.image.kid import poly_mmd

    real = torch.as_tensor(real).detach().double().cpu()
    fake = torch.as_tensor(fake).detach().double().cpu()
    if real.ndim != 2 or real.shape != fake.shape:
        raise ValueError(f"KID needs two feature sets [M, D] of one shape (the same cameras rendered and captured), "
                         f"got {tuple(real.shape)} and {tuple(fake.shape)}.")
    if real.shape[0] < 2:
        raise ValueError("KID needs at least 2 images per set.")
    return float(poly_mmd(real, fake, degree=3, gamma=None, coef=1.0))


def load_inception(path: Union[str, Path]) -> nn.Module:
    """torchmetrics' InceptionV3 feature extractor (2048-d pool features) with weights from a local file."""
    from nerfeditor_ns.gan.weights_io import WeightsFileError, read_weights_file

    state = read_weights_file(path, "InceptionV3 (torch-fidelity)", INCEPTION_FLAG,
                              hint=f"Pass torch-fidelity's {INCEPTION_FILE} with {INCEPTION_FLAG}.")
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise WeightsFileError(f"'{path}' is not torch-fidelity's InceptionV3 state dict (no Mixed_7c.* entries). "
                               f"Pass {INCEPTION_FILE} with {INCEPTION_FLAG}.")
    del state
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        # the file passed the weights-only check above; torch-fidelity then reads it itself
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=[INCEPTION_FEATURE],
                                  feature_extractor_weights_path=str(Path(path).expanduser()))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise WeightsFileError(f"'{path}' does not fit torch-fidelity's InceptionV3 ({first}). "
                               f"Pass {INCEPTION_FILE} with {INCEPTION_FLAG}.") from None


def inception_features(inception: Callable[[Tensor], Tensor], images: Float[Tensor, "N H W 3"], batch: int = 16
                       ) -> Float[Tensor, "N D"]:
    """Pool features of [0, 1] images (quantised to uint8 as torchmetrics does with ``normalize=True``)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected images [N, H, W, 3], got {tuple(images.shape)}.")
    param = next(iter(getattr(inception, "parameters", lambda: iter(()))()), None)
    device = param.device if param is not None else torch.device("cpu")
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch):
            x = (images[start : start + batch].clamp(0, 1) * 255).byte().permute(0, 3, 1, 2).to(device)
            out.append(inception(x).double().cpu())
    return torch.cat(out)
