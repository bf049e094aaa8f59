"""The networks of the edit metrics (:class:`nerfeditor_ns.eval.report.EvalNetworks`), from local files only.

Each network is optional: when its file is not given the metrics that need it are switched off with a note naming
the flag; when a given file cannot be loaded the error names the flag and the file (through ``load_network``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from nerfeditor_ns.edit.errors import EditError
from nerfeditor_ns.edit.networks import NETWORK_SOURCES, NetworkPaths


def _missing(name: str) -> str:
    flag, env, _ = NETWORK_SOURCES[name]
    return f"no {flag} (or ${env})"


def _set_lpips(nets: Any, vgg: Any, device: Any) -> None:
    """The spatial LPIPS-VGG of the lpips package around the given VGG16 trunk; without the package LPIPS is off."""
    from nerfeditor_ns.gan.losses import LPIPS_INSTALL_HINT, lpips_vgg

    try:
        nets.lpips = lpips_vgg(vgg, spatial=True).to(device)
    except ImportError:
        nets.missing["lpips"] = f"the lpips package is not installed ({LPIPS_INSTALL_HINT})"


def _arcface_fn(net: Any) -> Callable:
    device = next(net.parameters()).device
    return lambda x: net(x.to(device)).float().cpu()


def build_eval_networks(paths: NetworkPaths, device: Any, load: Callable[[str, Callable], Any]):
    """EvalNetworks from resolved network files; ``load(name, loader)`` loads one file (``EditContext.network`` or
    ``load_network``), turning a bad file into an :class:`EditError` naming its flag."""
    from nerfeditor_ns.eval.report import EvalNetworks

    nets = EvalNetworks()
    if paths.vgg is not None:
        from nerfeditor_ns.gan.losses import load_vgg16_features

        _set_lpips(nets, load("vgg", lambda p: load_vgg16_features(p)), device)
    else:
        nets.missing["lpips"] = _missing("vgg")
    if paths.arcface is not None:
        from nerfeditor_ns.gan.arcface import load_arcface

        nets.arcface = _arcface_fn(load("arcface", lambda p: load_arcface(p).to(device)))
    else:
        nets.missing["arcface"] = _missing("arcface")
    if paths.clip is not None:
        set_clip(nets, load_clip_checked(paths, device, load))
    else:
        nets.missing["clip"] = _missing("clip")
    if paths.inception is not None:
        from nerfeditor_ns.eval.kid import load_inception

        nets.inception = load("inception", lambda p: load_inception(p).to(device))
    else:
        nets.missing["inception"] = _missing("inception")
    return nets


def load_clip_checked(paths: NetworkPaths, device: Any, load: Callable[[str, Callable], Any]):
    """The open_clip model of --clip / --clip-model, or an EditError saying how to install open_clip."""
    from nerfeditor_ns.gan import edits

    try:
        return load("clip", lambda p: edits.load_clip(paths.clip_model, p, device=device))
    except ImportError as err:
        raise EditError(str(err), f"install the optional CLIP dependency: {edits.CLIP_INSTALL_HINT}.") from None


def set_clip(nets: Any, clip: Optional[Any]) -> None:
    """Fill the CLIP embedders of ``nets`` from a loaded open_clip model."""
    from nerfeditor_ns.eval.clip_direction import clip_embedders

    emb = clip_embedders(clip)
    nets.clip_image, nets.clip_text = emb["image"], emb["text"]


def networks_of_edit(ctx: Any):
    """EvalNetworks of the edit's outputs step, from the networks the edit loaded (--vgg, --arcface, --clip). KID is
    left to ``ns-edit eval`` (--inception); a --clip file only loaded here (non-prompt edits) that fails to load
    switches the CLIP metrics off with the error instead of failing the finished edit."""
    from nerfeditor_ns.eval.report import EvalNetworks

    nets = EvalNetworks()
    perceptual = ctx.perceptual()
    if perceptual is not None and perceptual.enabled:
        _set_lpips(nets, perceptual.features, ctx.device)
    else:
        nets.missing["lpips"] = _missing("vgg")
    identity = ctx.identity()
    if identity is not None and identity.net is not None:
        nets.arcface = _arcface_fn(identity.net)
    else:
        nets.missing["arcface"] = _missing("arcface")
    if ctx.networks.clip is not None:
        try:
            set_clip(nets, ctx.clip())
        except EditError as err:
            nets.missing["clip"] = f"--clip could not be loaded ({err.problem})"
    else:
        nets.missing["clip"] = _missing("clip")
    nets.missing["inception"] = "computed by `ns-edit eval --inception FILE` only"
    return nets
