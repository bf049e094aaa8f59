"""Randomly initialised stand-ins for the metric networks, saved in the layouts of the real files, and the lpips
package's own LPIPS built the package's way around the same trunk (the independent reference of the LPIPS tests).

Nothing here is downloaded: the weights are random, so the tests built on them check plumbing and formulas, not
perceptual quality.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

LPIPS_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def random_vgg16_file(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised torchvision vgg16 ``features`` saved in the vgg16-397923af.pth key layout
    (``features.N.*``); the classifier entries are small stand-ins (the loaders ignore them)."""
    import torchvision

    torch.manual_seed(seed)
    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features
    features = features.to_empty(device="cpu")
    for m in features.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = Path(directory) / "vgg16-random.pth"
    torch.save(state, path)
    return path


@functools.lru_cache(maxsize=2)
def package_lpips(vgg_file: str):
    """``lpips.LPIPS(net="vgg")`` built as the package builds it (torchvision's VGG16 with a random trunk, the
    package's shipped linear weights loaded by the package itself), then its five slices loaded from ``vgg_file``
    through the package network's own ``load_state_dict``. Toggle ``.spatial`` for the per-pixel map."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notes on the deprecated `pretrained=` argument
        net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    state = torch.load(vgg_file, map_location="cpu", weights_only=True)
    trunk = {}
    for k, (start, stop) in enumerate(LPIPS_SLICES):
        for i in range(start, stop):
            for what in ("weight", "bias"):
                if f"features.{i}.{what}" in state:
                    trunk[f"slice{k + 1}.{i}.{what}"] = state[f"features.{i}.{what}"]
    net.net.load_state_dict(trunk, strict=True)
    return net.eval()


def random_inception_file(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised torchmetrics / torch-fidelity InceptionV3 saved as the state dict layout of
    weights-inception-2015-12-05-6726825d.pth. Convolutions get He-normal weights so that the activations keep
    their scale through the ~100 layers (the default init lets them vanish and every image map to one feature)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    class _Unloaded(NoTrainInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    directory = Path(directory)
    empty = directory / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(seed)
    net = _Unloaded(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(empty))
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = directory / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return path
