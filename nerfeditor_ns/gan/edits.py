"""Edits of the frontal code ``w`` -> ``w_style`` (paper Sec. 3.2 "In-domain stylized set", Sec. 4.5).

"We can apply any existing latent code editing methods on the frontal latent code to get w_style". This module
holds the ones ``ns-edit`` offers:

- :func:`style_mix`: take the style rows of a reference code (Sec. 4.5, reference-image edits).
- :func:`component_edit`: move along a principal component of W (GANSpace-style; V from the decomposition).
- :func:`load_direction` / :func:`apply_direction`: a saved latent direction with a strength.
- :func:`parse_direction_spec` / :func:`apply_direction_spec`: the ``--direction "pc:7:+3"`` / ``"smile.pt:2.0"``
  command-line form of the two above.
- :func:`load_clip` / :func:`clip_optimize`: text-prompt edits by CLIP-guided latent optimisation, as in the
  latent-optimisation method of StyleCLIP (Patashnik et al., ICCV 2021). The paper edits from text prompts but does
  not say how; it cites GANSpace [7] and InterFaceGAN [21] only as examples of latent code editing methods (neither
  edits from text), so this choice is ours.

Codes are W+ tensors ``[num_ws, w_dim]`` (or batched ``[B, num_ws, w_dim]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.direction_spec import DirectionSpec, parse_direction_spec
from nerfeditor_ns.gan.weights_io import read_weights_file

__all__ = [
    "style_mix",
    "component_edit",
    "load_direction",
    "apply_direction",
    "DirectionSpec",
    "parse_direction_spec",
    "apply_direction_spec",
    "DirectionFileError",
    "ClipModel",
    "load_clip",
    "clip_image_embedding",
    "clip_text_embedding",
    "ClipOptimizeResult",
    "clip_optimize",
    "CLIP_INSTALL_HINT",
]

CLIP_INSTALL_HINT = 'pip install "nerfeditor-ns[clip]"'

Layers = Optional[Tuple[int, int]]


class DirectionFileError(ValueError):
    """A latent direction file is missing, unreadable or has the wrong shape."""


# ------------------------------------------------------------------------------------------------------------------
# Style mixing, components, directions
# ------------------------------------------------------------------------------------------------------------------


def _row_range(layers: Layers, num_ws: int) -> Tuple[int, int]:
    if layers is None:
        return 0, num_ws
    start, end = int(layers[0]), int(layers[1])
    if not 0 <= start < end <= num_ws:
        raise ValueError(f"layer range {tuple(layers)} is not a valid [start, end) row range of a {num_ws}-row code.")
    return start, end


def _check_code(w: Tensor, name: str = "w") -> None:
    if w.ndim not in (2, 3):
        raise ValueError(f"{name} must be a W+ code [num_ws, w_dim] or [B, num_ws, w_dim]; got {tuple(w.shape)}.")


def style_mix(
    w_frontal: Float[Tensor, "*B num_ws D"], w_reference: Float[Tensor, "*B num_ws D"], layer_split: int
) -> Float[Tensor, "*B num_ws D"]:
    """Style mixing (Sec. 4.5): rows ``< layer_split`` from ``w_frontal`` (geometry, pose), rows ``>= layer_split``
    from ``w_reference`` (style). ``layer_split = G.style_start(res)`` matches the hidden mapper's split.
    """
    _check_code(w_frontal, "w_frontal")
    _check_code(w_reference, "w_reference")
    if w_frontal.shape[-2:] != w_reference.shape[-2:]:
        raise ValueError(
            f"w_frontal {tuple(w_frontal.shape)} and w_reference {tuple(w_reference.shape)} have different "
            "[num_ws, w_dim]; both must come from the same generator."
        )
    num_ws = w_frontal.shape[-2]
    if not 0 <= layer_split <= num_ws:
        raise ValueError(f"layer_split must be in [0, {num_ws}], got {layer_split}.")
    w_frontal, w_reference = torch.broadcast_tensors(w_frontal, w_reference)
    return torch.cat([w_frontal[..., :layer_split, :], w_reference[..., layer_split:, :]], dim=-2)


def component_edit(
    w: Float[Tensor, "*B num_ws D"],
    V: Float[Tensor, "D k"],
    component: int,
    strength: float,
    layers: Layers = None,
    eigenvalues: Optional[Float[Tensor, "k"]] = None,
) -> Float[Tensor, "*B num_ws D"]:
    """GANSpace-style edit ``w[rows] += strength * sigma_c * v_c`` along principal component ``c`` of W.

    ``V`` (columns by decreasing variance) and ``eigenvalues`` come from the decomposition
    (:func:`nerfeditor_ns.gan.decomposition.top_eigenpairs`). With ``eigenvalues`` the strength is in units of
    the component's standard deviation ``sigma_c = sqrt(l_c)`` in W (strength 2 = two standard deviations, as in
    GANSpace); without them it is in raw W units along the unit vector ``v_c``. ``layers = (start, end)`` limits
    the edit to those rows of the W+ code (GANSpace edits e.g. rows 0-3 for pose, 6-11 for colour); None = all.
    """
    _check_code(w)
    if V.ndim != 2 or V.shape[0] != w.shape[-1]:
        raise ValueError(f"V must be [w_dim={w.shape[-1]}, k], got {tuple(V.shape)}.")
    if not 0 <= component < V.shape[1]:
        raise ValueError(f"component {component} is out of range: the basis has {V.shape[1]} components (0-based).")
    scale = float(strength)
    if eigenvalues is not None:
        scale *= math.sqrt(max(float(eigenvalues[component]), 0.0))
    start, end = _row_range(layers, w.shape[-2])
    out = w.clone()
    out[..., start:end, :] += scale * V[:, component].to(w.dtype)
    return out


def load_direction(path: Union[str, Path]) -> Union[Float[Tensor, "D"], Float[Tensor, "num_ws D"]]:
    """Loads a latent direction: a torch file holding a ``[w_dim]`` or ``[num_ws, w_dim]`` float tensor.

    Accepted contents: the tensor itself, or a dict with a ``"direction"`` tensor (or with exactly one tensor).
    Loaded with ``torch.load(weights_only=True)``: nothing in the file is executed.
    """
    path = Path(path).expanduser()
    obj = read_weights_file(
        path,
        "Direction",
        hint="Pass an existing .pt file holding a [w_dim] or [num_ws, w_dim] tensor (e.g. --direction smile.pt:2.0),"
        " saved with torch.save(tensor, path).",
        error=DirectionFileError,
    )
    if isinstance(obj, dict):
        if "direction" in obj and isinstance(obj["direction"], Tensor):
            obj = obj["direction"]
        else:
            tensors = [v for v in obj.values() if isinstance(v, Tensor)]
            if len(tensors) != 1:
                raise DirectionFileError(
                    f"direction file {path} holds a dict with keys {sorted(map(str, obj))}; expected a tensor, or a "
                    "dict with a 'direction' tensor."
                )
            obj = tensors[0]
    if not isinstance(obj, Tensor):
        raise DirectionFileError(f"direction file {path} holds a {type(obj).__name__}, expected a tensor.")
    if obj.ndim not in (1, 2) or not torch.is_floating_point(obj):
        raise DirectionFileError(
            f"direction in {path} has shape {tuple(obj.shape)} and dtype {obj.dtype}; expected a float tensor "
            "[w_dim] or [num_ws, w_dim]."
        )
    if not torch.isfinite(obj).all():
        raise DirectionFileError(f"direction in {path} has NaN or Inf entries.")
    return obj.to(torch.float32)


def apply_direction(
    w: Float[Tensor, "*B num_ws D"],
    direction: Union[Float[Tensor, "D"], Float[Tensor, "num_ws D"]],
    strength: float,
    layers: Layers = None,
) -> Float[Tensor, "*B num_ws D"]:
    """``w + strength * direction`` on the rows ``layers`` (all when None).

    A ``[w_dim]`` direction is added to every selected row; a ``[num_ws, w_dim]`` direction row by row. The
    direction is used as saved (not normalised), so ``strength`` is in the units it was saved in.
    """
    _check_code(w)
    num_ws, w_dim = w.shape[-2:]
    if direction.shape[-1] != w_dim:
        raise ValueError(f"direction has size {direction.shape[-1]} but the generator's w_dim is {w_dim}.")
    if direction.ndim == 2 and direction.shape[0] != num_ws:
        raise ValueError(f"direction has {direction.shape[0]} rows but the code has num_ws={num_ws} rows.")
    start, end = _row_range(layers, num_ws)
    d = direction.to(device=w.device, dtype=w.dtype)
    if d.ndim == 2:
        d = d[start:end]
    out = w.clone()
    out[..., start:end, :] += float(strength) * d
    return out


def apply_direction_spec(
    w: Float[Tensor, "*B num_ws D"],
    spec: Union[str, DirectionSpec],
    V: Optional[Float[Tensor, "D k"]] = None,
    eigenvalues: Optional[Float[Tensor, "k"]] = None,
) -> Float[Tensor, "*B num_ws D"]:
    """Applies a ``--direction`` spec: a principal component (needs ``V`` and ``eigenvalues``) or a file."""
    if isinstance(spec, str):
        spec = parse_direction_spec(spec)
    if spec.kind == "pc":
        if V is None or eigenvalues is None:
            raise ValueError("a 'pc:' direction needs the decomposition's V and eigenvalues.")
        return component_edit(w, V, spec.component, spec.strength, spec.layers, eigenvalues)
    return apply_direction(w, load_direction(spec.path), spec.strength, spec.layers)


# ------------------------------------------------------------------------------------------------------------------
# CLIP
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class ClipModel:
    """An open_clip model loaded from a local file, with its tokenizer and image preprocessing constants."""

    model: nn.Module
    tokenizer: Callable[[List[str]], Tensor]
    image_size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    name: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _import_open_clip():
    try:
        import open_clip  # heavy: imported only here
    except ImportError as err:
        raise ImportError(
            f"CLIP edits (--prompt) need the optional package open_clip_torch: {CLIP_INSTALL_HINT} "
            f"(import failed: {err})."
        ) from None
    return open_clip


def _read_clip_state(path: Path) -> Dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"cannot read CLIP weights {path} as a weights-only torch file ({type(err).__name__}). Use open_clip's "
                "state-dict files (open_clip_pytorch_model.bin or open_clip_model.safetensors); TorchScript archives "
                "(OpenAI's original ViT-B-32.pt) are not supported."
            ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"CLIP weights {path} hold a {type(state).__name__}, expected a state dict.")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_clip(
    model_name: str, weights_path: Union[str, Path], device: Union[str, torch.device] = "cpu"
) -> ClipModel:
    """Builds the open_clip architecture ``model_name`` (e.g. ``"ViT-B-32"``) and loads its weights from a local
    file. Never downloads: no pretrained tag is used, and a missing file is an error naming ``--clip``.

    The model is frozen in eval mode. Mean/std/size come from the model's preprocess config (OpenAI's CLIP
    statistics by default).
    """
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP weights file {path} does not exist. Pass a local open_clip state dict for {model_name!r} with "
            "--clip (e.g. open_clip_pytorch_model.bin of laion/CLIP-ViT-B-32-laion2B-s34B-b79K); nothing is "
            "downloaded."
        )
    open_clip = _import_open_clip()
    if model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {model_name!r}; choose one of open_clip.list_models(), e.g. ViT-B-32, ViT-B-16."
        )
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    state = _read_clip_state(path)
    hint = "Pass the open_clip model name the file was saved from (--clip-model)."
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = [line.strip() for line in str(err).splitlines() if "size mismatch" in line][:2]
        raise ValueError(f"CLIP weights {path} do not fit the {model_name!r} architecture: {first}. {hint}") from None
    missing = [k for k in missing if not k.endswith("attn_mask")]
    if missing or unexpected:
        raise ValueError(
            f"CLIP weights {path} do not fit the {model_name!r} architecture ({len(missing)} missing keys, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}). {hint}"
        )
    model = model.to(device).eval().requires_grad_(False)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    mean = tuple(float(x) for x in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(x) for x in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    tokenizer = open_clip.get_tokenizer(model_name)
    return ClipModel(model=model, tokenizer=tokenizer, image_size=size, mean=mean, std=std, name=model_name)


def clip_preprocess(clip: ClipModel, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 h w"]:
    """Differentiable CLIP preprocessing of generator images: [-1, 1] -> [0, 1], bicubic antialiased resize to the
    model's input size, normalise with the model's mean/std."""
    x = ((images + 1.0) * 0.5).clamp(0.0, 1.0)
    if tuple(x.shape[-2:]) != clip.image_size:
        x = F.interpolate(x, size=clip.image_size, mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(clip.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_image_embedding(clip: ClipModel, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B E"]:
    """Unit-norm CLIP embeddings of images in [-1, 1] (differentiable w.r.t. the images)."""
    return F.normalize(clip.model.encode_image(clip_preprocess(clip, images)), dim=-1)


def clip_text_embedding(clip: ClipModel, prompt: str) -> Float[Tensor, "1 E"]:
    """Unit-norm CLIP embedding of a prompt. Empty or whitespace-only prompts are a ValueError."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the text prompt is empty; pass a description of the edit, e.g. --prompt 'tanned skin'.")
    tokens = clip.tokenizer([prompt.strip()]).to(clip.device)
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(tokens), dim=-1)


@dataclass
class ClipOptimizeResult:
    """What :func:`clip_optimize` returns."""

    w: Tensor
    """The edited code w_style, same shape as w_start."""
    history: Dict[str, List[float]] = field(default_factory=dict)
    """Per-step ``total``, ``clip``, ``l2`` (and ``identity``) values."""


def clip_optimize(
    generator: nn.Module,
    w_start: Float[Tensor, "num_ws D"],
    prompt: str,
    clip: ClipModel,
    steps: int = 200,
    l2_weight: float = 0.008,
    id_loss: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    id_weight: float = 0.005,
    lr: float = 0.1,
    layers: Layers = None,
    noise_mode: str = "const",
    progress: bool = True,
) -> ClipOptimizeResult:
    """Text-driven edit by CLIP-guided latent optimisation, StyleCLIP-style (the paper does not specify its
    text-editing method; see the module docstring)::

        w* = argmin_w  [1 - cos(E_img(G(w)), E_txt(prompt))] + l2_weight * ||w - w_start||^2
                       (+ id_weight * id_loss(G(w), G(w_start)))

    Adam with a cosine learning-rate decay; the generator and CLIP stay frozen. ``||.||^2`` is the sum of squares
    over the code. ``layers = (start, end)`` optimises only those rows of the W+ code (others stay at
    ``w_start``). Defaults follow StyleCLIP (lr 0.1, l2 0.008, id 0.005).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the text prompt is empty; pass a description of the edit, e.g. --prompt 'tanned skin'.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    single = w_start.ndim == 2
    w0 = (w_start[None] if single else w_start).detach().to(clip.device, torch.float32)
    _check_code(w0, "w_start")
    start, end = _row_range(layers, w0.shape[1])
    generator.requires_grad_(False)
    text = clip_text_embedding(clip, prompt)
    target_img = None
    if id_loss is not None:
        with torch.no_grad():
            target_img = generator.synthesis(w0, noise_mode=noise_mode)
    delta = torch.zeros_like(w0[:, start:end], requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    history: Dict[str, List[float]] = {"total": [], "clip": [], "l2": []}

    def code() -> Tensor:
        return torch.cat([w0[:, :start], w0[:, start:end] + delta, w0[:, end:]], dim=1)

    from nerfeditor_ns.io_utils import progress_bar

    bar = progress_bar("CLIP edit", enabled=progress)
    with bar:
        task = bar.add_task("", total=steps)
        for step in range(steps):
            img = generator.synthesis(code(), noise_mode=noise_mode)
            clip_term = (1.0 - (clip_image_embedding(clip, img) * text).sum(-1)).mean()
            l2_term = delta.pow(2).sum() / w0.shape[0]
            total = clip_term + l2_weight * l2_term
            if id_loss is not None:
                id_term = id_loss(img, target_img)
                total = total + id_weight * id_term
                history.setdefault("identity", []).append(float(id_term.detach()))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            schedule.step()
            history["total"].append(float(total.detach()))
            history["clip"].append(float(clip_term.detach()))
            history["l2"].append(float(l2_term.detach()))
            bar.update(task, completed=step + 1, description=f"clip {history['clip'][-1]:.4f}")
    w = code().detach()
    return ClipOptimizeResult(w=w[0] if single else w, history=history)
