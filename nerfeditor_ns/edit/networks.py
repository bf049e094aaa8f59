"""Where ``ns-edit`` finds its networks: command-line flags, environment variables, or a small config file.

Users set network paths once instead of repeating them on every command. For every network the first of these that
is set wins:

1. the command-line flag (``--generator PATH``),
2. the environment variable (``NERFEDITOR_GENERATOR=PATH``),
3. the config file: ``--network-config PATH``, else ``$NERFEDITOR_CONFIG``, else
   ``$XDG_CONFIG_HOME/nerfeditor/networks.yml`` (``~/.config/nerfeditor/networks.yml``). It is a flat YAML mapping,
   e.g. ``generator: /models/stylegan2-ffhq-config-f.pkl``; relative paths are relative to the file.

Only the generator is required (for ``--style-image`` the art generator ``--style-generator`` instead). Optional
networks switch their loss or mode off with one message; an edit mode that cannot work without one (``--prompt``
without ``--clip``, ``--style-image`` without ``--style-generator``) is refused before any work starts.

No torch import here: resolution runs before the heavy parts of the edit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nerfeditor_ns.edit.errors import EditError, MissingNetworkError
from nerfeditor_ns.io_utils import file_sha256

#: network name -> (command-line flag, environment variable, what it is for)
NETWORK_SOURCES: Dict[str, tuple] = {
    "generator": ("--generator", "NERFEDITOR_GENERATOR", "StyleGAN2 generator (.pkl from NVIDIA or rosinality .pt)"),
    "encoder": ("--encoder", "NERFEDITOR_ENCODER", "e4e encoder checkpoint (.pt)"),
    "arcface": ("--arcface", "NERFEDITOR_ARCFACE", "ArcFace IR-SE50 weights (model_ir_se50.pth)"),
    "clip": ("--clip", "NERFEDITOR_CLIP", "open_clip checkpoint file"),
    "vgg": ("--vgg", "NERFEDITOR_VGG", "torchvision VGG16 state dict (vgg16-397923af.pth)"),
    "style_generator": ("--style-generator", "NERFEDITOR_STYLE_GENERATOR", "art StyleGAN2 for --style-image"),
    "hidden_mapper": ("--hidden-mapper", "NERFEDITOR_HIDDEN_MAPPER", "trained hidden mapper (.pt)"),
    "inception": ("--inception", "NERFEDITOR_INCEPTION",
                  "torch-fidelity InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth)"),
}
#: plain (non-path) settings that may also come from the environment / config file
SETTING_SOURCES: Dict[str, tuple] = {
    "clip_model": ("--clip-model", "NERFEDITOR_CLIP_MODEL"),
    "cache_dir": ("--cache-dir", "NERFEDITOR_CACHE"),
}
CONFIG_ENV = "NERFEDITOR_CONFIG"


def default_config_file() -> Path:
    """``$NERFEDITOR_CONFIG`` or ``$XDG_CONFIG_HOME/nerfeditor/networks.yml``."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME", "") or Path.home() / ".config")
    return base / "nerfeditor" / "networks.yml"


@dataclass
class NetworkPaths:
    """Resolved network files (``None`` = not given) and where each came from."""

    generator: Optional[Path] = None
    encoder: Optional[Path] = None
    arcface: Optional[Path] = None
    clip: Optional[Path] = None
    vgg: Optional[Path] = None
    style_generator: Optional[Path] = None
    hidden_mapper: Optional[Path] = None
    inception: Optional[Path] = None
    """InceptionV3 weights for KID (``ns-edit eval``)."""
    clip_model: str = "ViT-B-32"
    cache_dir: Optional[Path] = None
    """Root of the user cache (hidden mappers live in ``<cache_dir>/hidden_mappers``); None = the default
    (``$NERFEDITOR_CACHE`` or ``~/.cache/nerfeditor-ns``)."""
    sources: Dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> Dict[str, Optional[str]]:
        """Paths as strings, for printing and for edit.json."""
        return {name: (str(getattr(self, name)) if getattr(self, name) else None) for name in NETWORK_SOURCES}


def _read_config_file(path: Path, explicit: bool) -> Dict[str, str]:
    if not path.exists():
        if explicit:
            raise EditError(f"Network config file {path} does not exist.", "check --network-config / $NERFEDITOR_CONFIG.")
        return {}
    import yaml  # local: small, but only needed when a file is there

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise EditError(
            f"Network config file {path} is not valid YAML ({err}).",
            "write one `name: /path/to/file` per line, e.g. `generator: /models/ffhq.pkl`.",
        ) from err
    if not isinstance(data, dict):
        raise EditError(f"Network config file {path} must be a mapping of names to paths.", "e.g. `generator: /m.pkl`.")
    known = set(NETWORK_SOURCES) | set(SETTING_SOURCES)
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise EditError(f"Unknown key(s) {unknown} in network config file {path}.", f"use only {sorted(known)}.")
    out = {}
    for key, value in data.items():
        if value is None:
            continue
        if key in NETWORK_SOURCES or key == "cache_dir":
            p = Path(str(value)).expanduser()
            out[key] = str(p if p.is_absolute() else (path.parent / p))
        else:
            out[key] = str(value)
    return out


def resolve_networks(
    flags: Dict[str, Optional[object]], network_config: Optional[Path] = None
) -> NetworkPaths:
    """Merge flags, environment variables and the config file (in that order of precedence).

    Args:
        flags: values given on the command line, keyed like :data:`NETWORK_SOURCES` / :data:`SETTING_SOURCES`
            (``None`` = not given).
        network_config: explicit config file (``--network-config``); else the default location, if it exists.
    """
    explicit = network_config is not None or bool(os.environ.get(CONFIG_ENV))
    cfg_path = Path(network_config).expanduser() if network_config is not None else default_config_file()
    from_file = _read_config_file(cfg_path, explicit)
    result = NetworkPaths()
    for name, source in list(NETWORK_SOURCES.items()) + list(SETTING_SOURCES.items()):
        flag, env = source[0], source[1]
        value, where = flags.get(name), flag
        if value is None and os.environ.get(env):
            value, where = os.environ[env], f"${env}"
        if value is None and name in from_file:
            value, where = from_file[name], f"{cfg_path} ({name})"
        if value is None:
            continue
        if name == "clip_model":
            result.clip_model = str(value)
        else:
            setattr(result, name, Path(str(value)).expanduser())
        result.sources[name] = where
    return result


def _check_file(paths: NetworkPaths, name: str) -> None:
    path: Optional[Path] = getattr(paths, name)
    if path is None:
        return
    flag, env, what = NETWORK_SOURCES[name]
    where = paths.sources.get(name, flag)
    if not path.exists():
        raise MissingNetworkError(
            f"The {what} file {path} (from {where}) does not exist.",
            f"pass an existing local file with {flag} (or set ${env} / `{name}:` in {default_config_file()}).",
        )
    if not path.is_file():
        raise MissingNetworkError(f"{path} (from {where}) is a directory, not a {what} file.", f"point {flag} at the file.")


def check_network_files(paths: NetworkPaths) -> None:
    """Refuse a given network path that does not exist or is a directory (message names its flag)."""
    for name in NETWORK_SOURCES:
        _check_file(paths, name)


def check_networks_for_mode(paths: NetworkPaths, mode: str) -> List[str]:
    """Refuse up front when the edit mode needs a network that is missing; return notes on optional ones left out.

    Args:
        paths: resolved networks.
        mode: ``prompt`` | ``reference_image`` | ``edited_image`` | ``style_image`` | ``direction`` | ``train_mapper``.
    Returns:
        One message per optional network that is absent (what is switched off because of it).
    """
    if paths.generator is None and mode != "style_image":
        raise MissingNetworkError(
            "No StyleGAN2 generator given: every edit needs one.",
            f"add --generator /path/to/stylegan2.pkl (or set $NERFEDITOR_GENERATOR, or `generator:` in "
            f"{default_config_file()}).",
        )
    required = {"prompt": ["clip"], "style_image": ["style_generator"]}.get(mode, [])
    for name in required:
        if getattr(paths, name) is None:
            flag, env, what = NETWORK_SOURCES[name]
            raise MissingNetworkError(
                f"This edit ({'--' + mode.replace('_', '-')}) needs the {what}, which was not given.",
                f"add {flag} /path/to/file (or set ${env}).",
            )
    for name in NETWORK_SOURCES:
        _check_file(paths, name)
    notes = []
    if mode == "style_image":  # the art generator and its hidden mapper make every guide
        unused = [NETWORK_SOURCES[n][0] for n in ("generator", "encoder", "arcface") if getattr(paths, n) is not None]
        if unused:
            notes.append(f"{', '.join(unused)} not used by --style-image (the art generator --style-generator and its "
                         "hidden mapper make every guide; the subject is inverted into it by projection).")
        return notes + ([] if paths.vgg is not None else [
            "no --vgg: perceptual (VGG) losses are switched off and the hidden mapper uses its slim backbone."])
    if mode != "train_mapper":
        if paths.encoder is None:
            notes.append("no --encoder: the frontal view is inverted by optimisation (projection), which is slower.")
        if paths.arcface is None:
            notes.append("no --arcface: the identity loss of the latent code adjustor is switched off.")
    if paths.vgg is None:
        notes.append(
            "no --vgg: perceptual (VGG) losses are switched off and the hidden mapper uses its slim backbone."
        )
    return notes


def network_hashes(paths: NetworkPaths) -> Dict[str, Dict[str, str]]:
    """``{name: {"path": ..., "sha256": ...}}`` for every network that is set."""
    out = {}
    for name in NETWORK_SOURCES:
        p = getattr(paths, name)
        if p is not None and Path(p).is_file():
            out[name] = {"path": str(Path(p).resolve()), "sha256": file_sha256(p)}
    return out
