"""Hidden mapper H: image -> StyleGAN hidden map (paper Sec. 3.3, Alg. 1, App. C, Fig. 4 and Fig. 14).

The generator is split at a resolution ``res`` into ``G_geo`` (the blocks up to ``res``, driven by
``w_geo = ws[:, :G.style_start(res)]``) and ``G_style`` (the remaining blocks, driven by ``w_style``):
``F = G_geo(w_geo)``, ``I = G_style(F, w_style)``. The hidden map ``F`` is ``G.synthesis_features(ws, upto=res)``:
the feature map concatenated with the RGB skip accumulated so far (``C_res + 3`` channels), so that
``G.synthesis_from_features(F, ws, res)`` continues exactly.

This module holds the network, its use at edit time and the checkpoint / cache format; the training loop (Alg. 1)
is :mod:`nerfeditor_ns.gan.hidden_mapper_training`.

``H`` is a VGG16 ``features`` backbone plus light conv heads, one per trained resolution (App. C: 32, 64 and 128
for a 1024 generator). It is trained once per generator, self-supervised (Alg. 1): the same random
crop/rotate/rescale is applied to ``F^A = G_geo(w^A_geo)`` and to ``I^A = G(w^A)``; ``H(aug(I^A))`` must reproduce
``aug(F^A)`` and, after style mixing with another sample's ``w^B_style``, the mixed image. At edit time an
out-of-domain render is stylised as ``I_out = G_style(H(render), w_style)`` (:func:`stylize_out_of_domain`).

Checkpoints are plain dicts of tensors / numbers / strings, loaded with ``torch.load(weights_only=True)``; training
writes them atomically and resumes from the saved step with the saved random state, so an interrupted run ends
with the same weights as an uninterrupted one (on the same device). Finished mappers are cached per generator
file (keyed by its SHA-256) and reused for every scene.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from nerfeditor_ns.gan.augment import AugmentConfig
from nerfeditor_ns.gan.weights_io import read_weights_file
from nerfeditor_ns.io_utils import file_sha256

CHECKPOINT_FORMAT = "nerfeditor-ns/hidden-mapper"
CHECKPOINT_VERSION = 1

# torchvision's VGG16 ("configuration D"): conv widths per stage; each stage ends with a 2x2 max-pool.
VGG16_STAGES: Tuple[Tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Config fields that do not change what a finished mapper computes (left out of the cache key / resume check).
_VOLATILE_FIELDS = ("num_iterations", "save_every", "log_every", "vgg_weights")


class HiddenMapperError(RuntimeError):
    """A hidden-mapper checkpoint or request cannot be used (message says why and what to do)."""


class GeneratorMismatchError(HiddenMapperError):
    """The checkpoint was trained for a different generator."""


@dataclass
class HiddenMapperConfig(InstantiateConfig):
    """Hidden mapper architecture and its self-supervised training (Alg. 1). ``setup(generator=G)`` builds it."""

    _target: Type = field(default_factory=lambda: HiddenMapper)
    resolutions: Optional[Tuple[int, ...]] = None
    """Hidden-map resolutions to predict and train. None: the paper's choice (App. C: 32, 64, 128 for a 1024
    generator, i.e. resolution/32 ... resolution/8), clamped to at least 8 and at most resolution/2, restricted to
    ``G.feature_resolutions``."""
    input_size: Optional[int] = None
    """Side the input image is resized to before the backbone. None: the generator's resolution."""
    vgg_weights: Optional[Path] = None
    """Local torchvision VGG16 checkpoint (e.g. ``vgg16-397923af.pth``) for the backbone. None: random init (the
    paper uses ImageNet weights; random init trains too, more slowly)."""
    backbone_width_mult: float = 1.0
    """Width multiplier of the VGG16 stages (1.0 = the paper's VGG16; < 1 gives a slim backbone for tests)."""
    backbone_stages: int = 5
    """Number of VGG16 stages to build (1-5). Heads whose stride needs a deeper stage resample the deepest one."""
    head_channels: int = 256
    """Width of the conv layers of each head."""
    head_layers: int = 2
    """Number of 3x3 conv + LeakyReLU layers per head (before the final 1x1 projection)."""
    image_skip: bool = True
    """Also feed each head the input image, resized to 4x the head's resolution and folded into channels
    (space-to-depth, 48 channels), so fine detail reaches the heads directly."""
    num_iterations: int = 20000
    """Training iterations (App. C: 20,000)."""
    batch_size: int = 2
    """Batch size (App. C: 2)."""
    lr: float = 1e-4
    """Adam learning rate."""
    adam_betas: Tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    truncation_psi: float = 1.0
    """Truncation of the sampled w^A, w^B (1.0 = the generator's full distribution)."""
    noise_mode: Literal["const", "random", "none"] = "const"
    """Generator noise during training ("const" keeps training deterministic and resumable)."""
    image_loss_weight: float = 1.0
    """Weight of L1(I_mix, I_mix_hat) (Alg. 1)."""
    feature_loss_weight: float = 1.0
    """Weight of L1(aug(F^A), F_hat) (Alg. 1)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """The shared geometric augmentation (crop, rotate, rescale)."""
    seed: int = 0
    """Seed of the training random stream (latents, resolution choice, augmentation)."""
    save_every: int = 1000
    """Write a resumable checkpoint every this many iterations (and at the end)."""
    log_every: int = 50
    """Refresh the progress line with the running loss every this many iterations."""

    def setup(self, generator: Any, **kwargs: Any) -> "HiddenMapper":
        """Builds the (untrained) mapper for ``generator``; see :meth:`HiddenMapper.for_generator`."""
        return self._target.for_generator(self, generator, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


def default_resolutions(generator_resolution: int, feature_resolutions: Sequence[int]) -> Tuple[int, ...]:
    """App. C's hidden-map sizes (32, 64, 128 for 1024) scaled to the generator, clamped to [8, resolution/2]."""
    lo = max(8, generator_resolution // 32)
    hi = min(generator_resolution // 2, max(generator_resolution // 8, 2 * lo))
    chosen = tuple(sorted(r for r in feature_resolutions if lo <= r <= hi))
    if not chosen:
        raise HiddenMapperError(
            f"No hidden-map resolution between {lo} and {hi} among the generator's feature resolutions "
            f"{list(feature_resolutions)}; set HiddenMapperConfig.resolutions explicitly."
        )
    return chosen


def build_vgg16_features(width_mult: float = 1.0, num_stages: int = 5) -> nn.Sequential:
    """VGG16 ``features`` with torchvision's exact layer layout (same indices, so its state-dict keys load).

    ``width_mult`` scales every stage's width; ``num_stages`` keeps only the first stages.
    """
    if not 1 <= num_stages <= len(VGG16_STAGES):
        raise ValueError(f"backbone_stages must be in 1..{len(VGG16_STAGES)}, got {num_stages}.")
    if width_mult <= 0:
        raise ValueError(f"backbone_width_mult must be > 0, got {width_mult}.")
    layers: List[nn.Module] = []
    in_ch = 3
    for stage in VGG16_STAGES[:num_stages]:
        for width in stage:
            out_ch = max(1, int(round(width * width_mult)))
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = out_ch
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def load_vgg16_weights(features: nn.Sequential, path: Union[str, Path]) -> None:
    """Loads the ``features.*`` tensors of a local torchvision VGG16 checkpoint into ``features`` (restricted
    unpickling). Raises a clear error for a missing file, a non-VGG16 file, or a slim backbone."""
    path = Path(path).expanduser()
    state = read_weights_file(
        path,
        "VGG16 weights",
        hint="Pass the local torchvision checkpoint (vgg16-397923af.pth) as HiddenMapperConfig.vgg_weights "
        "(--hidden-mapper.vgg-weights), or leave it unset for a random init.",
        error=HiddenMapperError,
    )
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HiddenMapperError(f"{path} is not a VGG16 state dict (got {type(state).__name__}).")
    own = features.state_dict()
    sub = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    missing = [k for k in own if k not in sub]
    if missing:
        raise HiddenMapperError(
            f"{path} lacks VGG16 feature tensors {missing[:4]}...; is it a torchvision vgg16 checkpoint?"
        )
    for key, value in own.items():
        if tuple(sub[key].shape) != tuple(value.shape):
            raise HiddenMapperError(
                f"VGG16 tensor features.{key} in {path} has shape {tuple(sub[key].shape)}, the backbone needs "
                f"{tuple(value.shape)}: pretrained weights need backbone_width_mult=1.0."
            )
    features.load_state_dict({k: sub[k] for k in own}, strict=True)


_SKIP_FOLD = 4  # image skip: a (4r x 4r) copy of the input folded into 48 channels at head resolution r


def _space_to_depth(rgb: Float[Tensor, "B 3 S S"], res: int) -> Float[Tensor, "B 48 r r"]:
    size = res * _SKIP_FOLD
    if rgb.shape[-1] != size:
        shrink = rgb.shape[-1] > size
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return F.pixel_unshuffle(rgb, _SKIP_FOLD)


class HiddenMapper(nn.Module):
    """VGG16 backbone + one conv head per hidden-map resolution (App. C, Fig. 14).

    Args:
        config: architecture settings.
        out_channels: ``{res: C_res + 3}`` (from ``G.feature_channels(res)``), one head per entry.
        image_resolution: the generator's output side (images at another size are resized first).
    """

    def __init__(self, config: HiddenMapperConfig, out_channels: Dict[int, int], image_resolution: int) -> None:
        super().__init__()
        if not out_channels:
            raise ValueError("HiddenMapper needs at least one output resolution.")
        self.config = config
        self.image_resolution = int(image_resolution)
        self.input_size = int(config.input_size or image_resolution)
        self.out_channels = {int(r): int(c) for r, c in sorted(out_channels.items())}
        self.resolutions: Tuple[int, ...] = tuple(self.out_channels)
        self.backbone = build_vgg16_features(config.backbone_width_mult, config.backbone_stages)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        # Taps: the last ReLU of each stage (stride 2^(s-1)) and the final pool (stride 2^stages).
        self._taps: List[Tuple[int, int, int]] = []  # (layer index, stride, channels)
        idx, channels = 0, 3
        for s, stage in enumerate(VGG16_STAGES[: config.backbone_stages]):
            for width in stage:
                channels = max(1, int(round(width * config.backbone_width_mult)))
                idx += 2
            self._taps.append((idx - 1, 2**s, channels))
            idx += 1
        self._taps.append((idx - 1, 2 ** config.backbone_stages, channels))

        self._head_tap: Dict[int, int] = {}
        heads = {}
        for res, c_out in self.out_channels.items():
            stride = self.input_size / res
            tap = min(range(len(self._taps)), key=lambda t: (abs(math.log2(self._taps[t][1] / stride)), -t))
            self._head_tap[res] = tap
            c_in = self._taps[tap][2] + (3 * _SKIP_FOLD**2 if config.image_skip else 0)
            layers: List[nn.Module] = []
            for _ in range(config.head_layers):
                layers += [nn.Conv2d(c_in, config.head_channels, 3, padding=1), nn.LeakyReLU(0.2)]
                c_in = config.head_channels
            layers.append(nn.Conv2d(c_in, c_out, 1))
            heads[str(res)] = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(heads)

    @classmethod
    def for_generator(cls, config: HiddenMapperConfig, generator: Any) -> "HiddenMapper":
        """Builds the mapper for generator ``G`` (its feature resolutions / channels), loading VGG16 weights if
        ``config.vgg_weights`` is set."""
        resolutions = resolve_resolutions(config, generator)
        mapper = cls(config, {r: int(generator.feature_channels(r)) for r in resolutions}, int(generator.resolution))
        if config.vgg_weights is not None:
            load_vgg16_weights(mapper.backbone, config.vgg_weights)
        return mapper

    def _prepare(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 S S"]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"HiddenMapper expects images [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}.")
        if images.shape[2] != images.shape[3]:
            raise ValueError(
                "HiddenMapper expects square images (the generator's framing), got "
                f"{images.shape[2]}x{images.shape[3]}; "
                "crop the render to a square around the subject first."
            )
        if images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > self.input_size)
        return images

    def forward(
        self, images: Float[Tensor, "B 3 H W"], resolutions: Optional[Sequence[int]] = None
    ) -> Dict[int, Float[Tensor, "B C r r"]]:
        """Predicts the hidden maps ``{res: [B, C_res + 3, res, res]}`` of images in [-1, 1] (all trained
        resolutions, or only ``resolutions``)."""
        wanted = tuple(self.resolutions if resolutions is None else resolutions)
        for r in wanted:
            if r not in self.out_channels:
                raise ValueError(f"This hidden mapper predicts resolutions {list(self.resolutions)}, not {r}.")
        x = self._prepare(images)
        rgb = x
        x = ((x + 1.0) * 0.5 - self.mean) / self.std  # [-1,1] -> ImageNet normalisation
        needed = {self._taps[self._head_tap[r]][0] for r in wanted}
        last = max(needed)
        taps: Dict[int, Tensor] = {}
        for i, layer in enumerate(self.backbone):
            if i > last:
                break
            x = layer(x)
            if i in needed:
                taps[i] = x
        out: Dict[int, Tensor] = {}
        for r in wanted:
            feat = taps[self._taps[self._head_tap[r]][0]]
            if feat.shape[-1] != r:
                feat = F.interpolate(feat, size=(r, r), mode="bilinear", align_corners=False,
                                     antialias=feat.shape[-1] > r)
            if self.config.image_skip:
                feat = torch.cat([feat, _space_to_depth(rgb, r)], dim=1)
            out[r] = self.heads[str(r)](feat)
        return out


def resolve_resolutions(config: HiddenMapperConfig, generator: Any) -> Tuple[int, ...]:
    """The hidden-map resolutions this config trains for ``generator`` (validated)."""
    available = [int(r) for r in generator.feature_resolutions]
    if config.resolutions is None:
        return default_resolutions(int(generator.resolution), available)
    bad = [r for r in config.resolutions if int(r) not in available]
    if bad:
        raise HiddenMapperError(
            f"Hidden-map resolutions {bad} do not exist in this generator; choose from {available}."
        )
    return tuple(sorted({int(r) for r in config.resolutions}))


# --------------------------------------------------------------------------------------------------------------
# Using a mapper (Sec. 3.3, "Out-of-domain stylized set")
# --------------------------------------------------------------------------------------------------------------


def map_to_hidden(mapper: HiddenMapper, images: Float[Tensor, "B 3 H W"], res: int) -> Float[Tensor, "B C r r"]:
    """``H(images)`` at hidden-map resolution ``res``."""
    return mapper(images, resolutions=[res])[res]


def _expand_ws(generator: Any, w_style: Tensor, batch_size: int) -> Tensor:
    if w_style.ndim == 1:
        w_style = w_style[None]
    if w_style.ndim == 2:
        if w_style.shape[-1] != generator.w_dim:
            raise ValueError(f"w_style has width {w_style.shape[-1]}, the generator's w_dim is {generator.w_dim}.")
        w_style = w_style[:, None, :].expand(-1, generator.num_ws, -1)
    if w_style.ndim != 3 or tuple(w_style.shape[1:]) != (generator.num_ws, generator.w_dim):
        raise ValueError(
            f"w_style must be [w_dim], [B, w_dim] or [B, num_ws={generator.num_ws}, w_dim={generator.w_dim}]; "
            f"got {tuple(w_style.shape)}."
        )
    if w_style.shape[0] == 1 and batch_size > 1:
        w_style = w_style.expand(batch_size, -1, -1)
    if w_style.shape[0] != batch_size:
        raise ValueError(f"w_style has batch {w_style.shape[0]}, the images have {batch_size}.")
    return w_style


def stylize_out_of_domain(
    generator: Any,
    mapper: HiddenMapper,
    images: Float[Tensor, "B 3 H W"],
    w_style: Tensor,
    res: Optional[int] = None,
    noise_mode: str = "const",
    clamp: bool = True,
) -> Float[Tensor, "B 3 R R"]:
    """``I_out = G_style(H(images), w_style)`` (Sec. 3.3): renders in [-1, 1] -> stylised images in [-1, 1].

    ``w_style`` is a full ``ws`` ([num_ws, w_dim] per sample; only the entries from ``G.style_start(res)`` on are
    used) or a single w broadcast to all layers; batch 1 broadcasts to all images. ``res`` defaults to the
    mapper's lowest trained resolution (App. D / Fig. 15: lower = more style, higher = more of the render kept).
    ``clamp`` clips the result to [-1, 1] (guide images).
    """
    res = int(res if res is not None else mapper.resolutions[0])
    ws = _expand_ws(generator, w_style.to(images.device), images.shape[0])
    hidden = map_to_hidden(mapper, images, res)
    out = generator.synthesis_from_features(hidden, ws, res, noise_mode=noise_mode)
    return out.clamp(-1.0, 1.0) if clamp else out


# --------------------------------------------------------------------------------------------------------------
# Checkpoint format, loading and the per-generator cache
# --------------------------------------------------------------------------------------------------------------


def generator_fingerprint(generator: nn.Module) -> str:
    """SHA-256 of the generator's tensors (names, shapes, values): identifies the weights a mapper belongs to,
    whatever file or format they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def config_to_dict(config: HiddenMapperConfig) -> Dict[str, Any]:
    """The config as plain data (stored in checkpoints; ``_target`` left out)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.name == "_target":
            continue
        value = getattr(config, f.name)
        if isinstance(value, AugmentConfig):
            value = dataclasses.asdict(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(data: Dict[str, Any]) -> HiddenMapperConfig:
    """Inverse of :func:`config_to_dict` (unknown keys are ignored, missing ones take defaults)."""
    names = {f.name for f in dataclasses.fields(HiddenMapperConfig)} - {"_target"}
    kwargs = {k: v for k, v in data.items() if k in names}
    if kwargs.get("augment") is not None:
        aug_names = {f.name for f in dataclasses.fields(AugmentConfig)}
        kwargs["augment"] = AugmentConfig(**{k: v for k, v in kwargs["augment"].items() if k in aug_names})
    for key in ("resolutions", "adam_betas"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    if kwargs.get("vgg_weights") is not None:
        kwargs["vgg_weights"] = Path(kwargs["vgg_weights"])
    return HiddenMapperConfig(**kwargs)


def config_key(config: HiddenMapperConfig) -> str:
    """Short hash of the settings that change the trained mapper (not the iteration count or paths)."""
    data = {k: v for k, v in config_to_dict(config).items() if k not in _VOLATILE_FIELDS}
    data["pretrained_backbone"] = config.vgg_weights is not None
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def read_mapper_checkpoint(path: Path) -> Dict[str, Any]:
    path = Path(path).expanduser()
    ckpt = read_weights_file(
        path,
        "Hidden-mapper checkpoint",
        hint="Train one with train_hidden_mapper / get_or_train_hidden_mapper (ns-edit train-mapper), or pass the "
        "right path.",
        error=HiddenMapperError,
    )
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise HiddenMapperError(
            f"{path} is not a nerfeditor-ns hidden-mapper checkpoint (no '{CHECKPOINT_FORMAT}' tag)."
        )
    if int(ckpt.get("version", -1)) > CHECKPOINT_VERSION:
        raise HiddenMapperError(f"{path} was written by a newer nerfeditor-ns (format v{ckpt['version']}); upgrade.")
    return ckpt


def check_generator_fingerprint(ckpt: Dict[str, Any], path: Path, fingerprint: str) -> None:
    if ckpt.get("generator_fingerprint") != fingerprint:
        raise GeneratorMismatchError(
            f"Hidden mapper {path} was trained for a different generator (fingerprint "
            f"{str(ckpt.get('generator_fingerprint'))[:12]}..., this generator is {fingerprint[:12]}...). Use the "
            "mapper trained for this generator, or delete the file / pass another path to train a new one."
        )


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_hidden_mapper(
    path: Union[str, Path],
    generator: Optional[nn.Module] = None,
    device: Union[str, torch.device] = "cpu",
    require_finished: bool = False,
) -> HiddenMapper:
    """Loads a hidden mapper checkpoint (weights-only unpickling). With ``generator`` given, checks that the
    mapper was trained for exactly these weights (:class:`GeneratorMismatchError` otherwise)."""
    path = Path(path).expanduser()
    ckpt = read_mapper_checkpoint(path)
    if generator is not None:
        check_generator_fingerprint(ckpt, path, generator_fingerprint(generator))
    if require_finished and not ckpt.get("finished", False):
        raise HiddenMapperError(
            f"Hidden mapper {path} is only partly trained (step {ckpt.get('step')} of "
            f"{ckpt['config'].get('num_iterations')}); resume it with train_hidden_mapper(..., resume=True)."
        )
    config = config_from_dict(ckpt["config"])
    config.vgg_weights = None  # the backbone weights are in the checkpoint
    out_channels = {int(k): int(v) for k, v in ckpt["out_channels"].items()}
    mapper = HiddenMapper(config, out_channels, int(ckpt["image_resolution"]))
    try:
        mapper.load_state_dict(ckpt["mapper"])
    except RuntimeError as err:
        raise HiddenMapperError(
            f"{path}: mapper weights do not fit the stored architecture ({str(err).splitlines()[0]})."
        ) from None
    mapper.training_step = int(ckpt.get("step", 0))
    return mapper.to(device).eval()


def is_finished_mapper(path: Union[str, Path], num_iterations: Optional[int] = None) -> bool:
    """The cache policy: ``path`` holds a hidden mapper whose training finished (and ran at least ``num_iterations``
    steps, when given). A missing, damaged or foreign file is not finished (never an error here)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return False
    try:
        ckpt = read_mapper_checkpoint(path)
    except Exception:  # a damaged cache entry is skipped, not fatal
        return False
    if not ckpt.get("finished", False):
        return False
    return num_iterations is None or int(ckpt.get("step", 0)) >= int(num_iterations)


def default_cache_dir() -> Path:
    """``$NERFEDITOR_CACHE/hidden_mappers`` if the variable is set, else ``~/.cache/nerfeditor-ns/hidden_mappers``."""
    root = os.environ.get("NERFEDITOR_CACHE")
    base = Path(root).expanduser() if root else Path("~/.cache/nerfeditor-ns").expanduser()
    return base / "hidden_mappers"


def hidden_mapper_cache_path(
    generator_path: Union[str, Path],
    cache_dir: Optional[Union[str, Path]] = None,
    config: Optional[HiddenMapperConfig] = None,
) -> Path:
    """Cache file of the mapper for a generator file: ``<cache_dir>/<sha256 of the file>-<settings key>.pt``."""
    generator_path = Path(generator_path).expanduser()
    if not generator_path.is_file():
        raise HiddenMapperError(f"Generator file not found: {generator_path} (pass the StyleGAN2 checkpoint path).")
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = config_key(config if config is not None else HiddenMapperConfig())
    return directory / f"{file_sha256(generator_path)}-{key}.pt"
