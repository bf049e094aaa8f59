"""StyleGAN2 checkpoint formats: sniffing, safe reading, conversion to :class:`StyleGAN2Generator`.

Supported (format sniffed from the file, not from the suffix):

* rosinality ``stylegan2-pytorch`` ``.pt`` (``{'g_ema': state_dict, 'latent_avg': ...}``, zip or legacy
  ``torch.save``), read with ``torch.load(weights_only=True)``. ``w_avg`` = ``latent_avg`` (1-D, or the mean over
  rows of an [n, w_dim] tensor); when absent it is estimated as the mean mapping output over 4096 seeded normal z.
  The mapping learning-rate multiplier is not stored in the weights; rosinality's default ``lr_mlp = 0.01`` is used
  (override with ``mapping_lr_mul``).
* NVIDIA ``stylegan2-ada-pytorch`` / ``stylegan3`` (StyleGAN2 architecture) network pickles, read with the
  restricted unpickler of :mod:`nerfeditor_ns.gan.safe_pickle` (nothing from the file is executed). ``G_ema`` is
  used unless ``network="G"``. ``conv_clamp`` comes from the pickled constructor kwargs (``synthesis_kwargs``) or
  layer attributes, else the stylegan2-ada default 256; the mapping multiplier from the layers' ``bias_gain``,
  else 0.01.

Everything else about the architecture (resolution, channel table, mapping depth/width, z/w dims) is inferred
from the weight shapes, so FFHQ 1024 config-f, 256/512 models and non-standard channel tables all load.

Writing: :func:`generator_to_rosinality` / :func:`save_rosinality_checkpoint` write the rosinality format through
the reader's own key map (:func:`rosinality_key_map`), so a written file loads back exactly.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from nerfeditor_ns.gan.safe_pickle import PersistentRecord, UnsafeCheckpointError, restricted_load
from nerfeditor_ns.gan.stylegan2 import GeneratorSpec, StyleGAN2Generator

EXPECTED = (
    "expected a StyleGAN2 generator checkpoint: a rosinality .pt with 'g_ema' (+ optional 'latent_avg'), or an "
    "NVIDIA stylegan2-ada/stylegan3 network pickle with 'G_ema'"
)
DEFAULT_CONV_CLAMP = 256.0
DEFAULT_MAPPING_LR_MUL = 0.01
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[2:]  # torch.save (pre-zip) magic number


class CheckpointFormatError(ValueError):
    """The file is not a StyleGAN2 generator checkpoint in a supported format."""


# ---------------------------------------------------------------------------------------------------- reading
def _describe_keys(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:12])
        return f"a dict with keys [{shown}{', ...' if len(keys) > 12 else ''}]"
    return f"an object of type {type(obj).__name__}"


def read_checkpoint(path: Union[str, os.PathLike]) -> Tuple[str, Any]:
    """Read a checkpoint file safely; returns ``(container, object)`` with container "torch" or "pickle"."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"StyleGAN2 generator checkpoint not found: {path} (pass the path of a local NVIDIA .pkl or rosinality "
            ".pt file; nothing is downloaded)"
        )
    if path.is_dir():
        raise CheckpointFormatError(f"{path} is a directory; {EXPECTED}")
    with open(path, "rb") as f:
        head = f.read(32)
    if len(head) == 0:
        raise CheckpointFormatError(f"{path} is empty; {EXPECTED}")
    is_zip = head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path)
    if is_zip or (head[:2] == b"\x80\x02" and head[2:].startswith(_LEGACY_TORCH_MAGIC)):
        try:
            return "torch", torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"{path}: torch.load(weights_only=True) refused the file (it holds more than tensors and plain "
                f"containers): {str(err).splitlines()[0]}"
            ) from None
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
            raise CheckpointFormatError(
                f"{path} looks like a torch.save file but cannot be read (truncated or corrupt?): "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; {EXPECTED}"
            ) from None
    if head[:1] != b"\x80":
        raise CheckpointFormatError(f"{path} is neither a torch.save file nor a pickle; {EXPECTED}")
    try:
        with open(path, "rb") as f:
            return "pickle", restricted_load(f)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise CheckpointFormatError(
            f"{path} could not be unpickled (truncated or corrupt?): {type(err).__name__}: {err}; {EXPECTED}"
        ) from None


# ----------------------------------------------------------------------------------------------- rosinality
def _indices(state: Mapping[str, Any], pattern: str) -> list:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state for m in [rx.match(k)] if m})


def rosinality_spec_and_state(
    g_ema: Mapping[str, torch.Tensor], mapping_lr_mul: Optional[float] = None
) -> Tuple[GeneratorSpec, Dict[str, torch.Tensor]]:
    """Convert a rosinality ``g_ema`` state dict to (spec, state dict of :class:`StyleGAN2Generator`)."""
    required = ("input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "style.1.weight")
    missing = [k for k in required if k not in g_ema]
    if missing:
        raise CheckpointFormatError(f"rosinality g_ema state dict lacks {missing}; {EXPECTED}")
    mlp = _indices(g_ema, r"style\.(\d+)\.weight$")
    convs = _indices(g_ema, r"convs\.(\d+)\.conv\.weight$")
    if not convs or len(convs) % 2 or convs != list(range(len(convs))):
        raise CheckpointFormatError(f"rosinality g_ema has an unexpected 'convs.*' layout ({len(convs)} convs)")
    resolution = 4 * 2 ** (len(convs) // 2)
    channels = {4: int(g_ema["input.input"].shape[1])}
    for j in range(len(convs) // 2):
        channels[8 * 2**j] = int(g_ema[f"convs.{2 * j}.conv.weight"].shape[1])
    w_dim = int(g_ema["conv1.conv.modulation.weight"].shape[1])
    spec = GeneratorSpec(
        resolution=resolution,
        channels=channels,
        z_dim=int(g_ema[f"style.{mlp[0]}.weight"].shape[1]),
        w_dim=w_dim,
        mapping_layers=len(mlp),
        mapping_lr_mul=DEFAULT_MAPPING_LR_MUL if mapping_lr_mul is None else mapping_lr_mul,
        mapping_hidden=int(g_ema[f"style.{mlp[0]}.weight"].shape[0]),
        conv_clamp=None,
        equalized_conv_weights=True,
        truncation="rosinality",
        source_format="rosinality",
    )
    sd: Dict[str, torch.Tensor] = {}
    for ours, theirs, kind in rosinality_key_map(mlp, len(convs)):
        if kind == "kernel":  # one FIR kernel per kind; rosinality repeats it in every upsampling layer
            if ours not in sd and theirs in g_ema:
                sd[ours] = g_ema[theirs]
        elif kind == "noise":
            j = int(ours.split(".")[1])
            res = 4 * 2 ** ((j + 1) // 2)
            noise = g_ema.get(theirs)
            if noise is None:  # not in the file: deterministic stand-in, documented in load_generator
                noise = torch.randn(1, 1, res, res, generator=torch.Generator().manual_seed(1000 + j))
            sd[ours] = noise.reshape(1, 1, res, res)
        else:
            sd[ours] = _from_rosinality(g_ema[theirs], kind)
    sd.setdefault("conv_up_kernel", _k4())
    sd.setdefault("rgb_up_kernel", _k4())
    return spec, sd


def rosinality_key_map(mapping_indices: Sequence[int], num_convs: int) -> List[Tuple[str, str, str]]:
    """The one correspondence between a :class:`StyleGAN2Generator` state dict and a rosinality ``g_ema``, used by the
    reader (:func:`rosinality_spec_and_state`) and the writer (:func:`generator_to_rosinality`).

    Returns ``(our key, rosinality key, kind)`` in rosinality's state-dict order; ``kind`` says how the tensors
    differ: ``same``; ``lead1`` (rosinality has a leading singleton dim); ``scalar`` ([1] there, [] here);
    ``rgb_bias`` ([1, 3, 1, 1] there, [3] here); ``kernel`` (our one FIR kernel, repeated by rosinality in every
    upsampling layer); ``noise`` (the fixed noise buffer, optional in the file).
    """
    pairs: List[Tuple[str, str, str]] = []
    for i, idx in enumerate(mapping_indices):
        pairs += [(f"mapping_weights.{i}", f"style.{idx}.weight", "same"),
                  (f"mapping_biases.{i}", f"style.{idx}.bias", "same")]
    pairs.append(("const", "input.input", "lead1"))

    def styled_conv(name: str, j: int) -> None:
        pairs.append((f"layers.{j}.weight", f"{name}.conv.weight", "lead1"))
        if j % 2 == 1:  # the first conv of every block after 4x4 upsamples
            pairs.append(("conv_up_kernel", f"{name}.conv.blur.kernel", "kernel"))
        pairs.extend([(f"layers.{j}.affine_weight", f"{name}.conv.modulation.weight", "same"),
                      (f"layers.{j}.affine_bias", f"{name}.conv.modulation.bias", "same"),
                      (f"layers.{j}.noise_strength", f"{name}.noise.weight", "scalar"),
                      (f"layers.{j}.bias", f"{name}.activate.bias", "same")])

    def to_rgb(name: str, t: int) -> None:
        pairs.append((f"torgbs.{t}.bias", f"{name}.bias", "rgb_bias"))
        if t > 0:
            pairs.append(("rgb_up_kernel", f"{name}.upsample.kernel", "kernel"))
        pairs.extend([(f"torgbs.{t}.weight", f"{name}.conv.weight", "lead1"),
                      (f"torgbs.{t}.affine_weight", f"{name}.conv.modulation.weight", "same"),
                      (f"torgbs.{t}.affine_bias", f"{name}.conv.modulation.bias", "same")])

    styled_conv("conv1", 0)
    to_rgb("to_rgb1", 0)
    for j in range(num_convs):
        styled_conv(f"convs.{j}", j + 1)
    for t in range(num_convs // 2):
        to_rgb(f"to_rgbs.{t}", t + 1)
    pairs += [(f"layers.{j}.noise_const", f"noises.noise_{j}", "noise") for j in range(num_convs + 1)]
    return pairs


def _from_rosinality(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "lead1":
        return t[0]
    if kind == "scalar":
        return t.reshape([])
    if kind == "rgb_bias":
        return t.reshape(3)
    return t


def _to_rosinality(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "lead1":
        return t.unsqueeze(0)
    if kind == "scalar":
        return t.reshape(1)
    if kind == "rgb_bias":
        return t.reshape(1, 3, 1, 1)
    return t


def generator_to_rosinality(G: StyleGAN2Generator) -> "OrderedDict[str, torch.Tensor]":
    """The writer beside the reader: our parameters -> a rosinality ``g_ema`` (inverse of
    :func:`rosinality_spec_and_state`, through the same :func:`rosinality_key_map`).

    Only generators with rosinality conventions can be written (equalised 3x3 weights, no activation clamp,
    mapping lr multiplier 0.01, which the file cannot store); anything else raises ``ValueError``.
    """
    spec = G.spec
    if not spec.equalized_conv_weights or spec.conv_clamp is not None:
        raise ValueError(
            "only generators with rosinality conventions (equalized conv weights, no conv_clamp) can be saved in "
            "the rosinality format; this one came from an NVIDIA checkpoint"
        )
    if spec.mapping_lr_mul != DEFAULT_MAPPING_LR_MUL:
        raise ValueError(
            f"mapping_lr_mul {spec.mapping_lr_mul} is not stored in rosinality files (loaders assume "
            f"{DEFAULT_MAPPING_LR_MUL}); train with the default to save this format"
        )
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in G.state_dict().items()}
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for ours, theirs, kind in rosinality_key_map(range(1, spec.mapping_layers + 1), G.num_layers - 1):
        out[theirs] = _to_rosinality(sd[ours], kind)
    return out


def save_rosinality_checkpoint(
    G: StyleGAN2Generator, path: Union[str, os.PathLike], latent_avg: Optional[torch.Tensor] = None
) -> Dict[str, Any]:
    """Write ``{'g_ema': state_dict, 'latent_avg': [w_dim]}`` (rosinality ``.pt``) atomically; returns the dict.

    ``latent_avg`` defaults to the mean mapping output over 4096 seeded normal z (what rosinality computes with
    ``mean_latent``); it is also copied into ``G.w_avg`` so that truncation of ``G`` and of the reloaded file agree.
    """
    from nerfeditor_ns.io_utils import atomic_torch_save

    if latent_avg is None:
        latent_avg = G.estimate_w_avg()
    latent_avg = latent_avg.detach().to("cpu", torch.float32).reshape(G.w_dim)
    with torch.no_grad():
        G.w_avg.copy_(latent_avg.to(G.w_avg.device))
    ckpt = {"g_ema": generator_to_rosinality(G), "latent_avg": latent_avg.clone()}
    atomic_torch_save(ckpt, path)
    return ckpt


def _k4() -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / 16.0


# --------------------------------------------------------------------------------------------------- NVIDIA
def nvidia_spec_and_state(
    state: Mapping[str, torch.Tensor],
    attributes: Optional[Mapping[str, Mapping[str, Any]]] = None,
    mapping_lr_mul: Optional[float] = None,
) -> Tuple[GeneratorSpec, Dict[str, torch.Tensor]]:
    """Convert an NVIDIA ``Generator.state_dict()`` (+ plain module attributes) to (spec, state dict)."""
    attributes = attributes or {}
    if "synthesis.b4.const" not in state or "mapping.fc0.weight" not in state:
        if any(k.startswith("synthesis.input.") or ".L0_" in k for k in state):
            raise CheckpointFormatError("this is a StyleGAN3 (alias-free) generator; only StyleGAN2 is supported")
        raise CheckpointFormatError(
            f"NVIDIA generator state lacks 'synthesis.b4.const' / 'mapping.fc0.weight'; {EXPECTED}"
        )
    if any(k.startswith("mapping.embed.") for k in state):
        raise CheckpointFormatError("class-conditional generators (c_dim > 0) are not supported")
    blocks = _indices(state, r"synthesis\.b(\d+)\.conv1\.weight$")
    resolution = max(blocks)
    expected_blocks = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    if blocks != expected_blocks:
        raise CheckpointFormatError(f"unexpected synthesis blocks {blocks}")
    missing_rgb = [r for r in blocks if f"synthesis.b{r}.torgb.weight" not in state]
    if missing_rgb:
        raise CheckpointFormatError(
            f"only the 'skip' synthesis architecture (StyleGAN2 config-e/f) is supported; "
            f"blocks {missing_rgb} have no torgb"
        )
    fcs = _indices(state, r"mapping\.fc(\d+)\.weight$")
    channels = {r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in blocks}
    w_dim = int(state["synthesis.b4.conv1.affine.weight"].shape[1])

    conv_clamp: Optional[float] = DEFAULT_CONV_CLAMP
    syn_kwargs = (attributes.get("", {}).get("_init_kwargs") or {}).get("synthesis_kwargs")
    layer_attrs = attributes.get("synthesis.b4.conv1", {})
    if isinstance(syn_kwargs, Mapping) and "conv_clamp" in syn_kwargs:
        conv_clamp = syn_kwargs["conv_clamp"]
    elif "conv_clamp" in layer_attrs:
        conv_clamp = layer_attrs["conv_clamp"]
    if mapping_lr_mul is None:
        mapping_lr_mul = float(attributes.get("mapping.fc0", {}).get("bias_gain", DEFAULT_MAPPING_LR_MUL))

    spec = GeneratorSpec(
        resolution=resolution,
        channels=channels,
        z_dim=int(state["mapping.fc0.weight"].shape[1]),
        w_dim=w_dim,
        mapping_layers=len(fcs),
        mapping_lr_mul=mapping_lr_mul,
        mapping_hidden=int(state["mapping.fc0.weight"].shape[0]),
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        equalized_conv_weights=False,
        truncation="nvidia",
        source_format="nvidia",
    )
    sd: Dict[str, torch.Tensor] = {}
    for i in fcs:
        sd[f"mapping_weights.{i}"] = state[f"mapping.fc{i}.weight"]
        sd[f"mapping_biases.{i}"] = state[f"mapping.fc{i}.bias"]
    sd["w_avg"] = state.get("mapping.w_avg", torch.zeros(w_dim))
    sd["const"] = state["synthesis.b4.const"]
    layer_names = ["synthesis.b4.conv1"]
    for r in blocks[1:]:
        layer_names += [f"synthesis.b{r}.conv0", f"synthesis.b{r}.conv1"]
    for j, name in enumerate(layer_names):
        res = 4 * 2 ** ((j + 1) // 2)
        sd[f"layers.{j}.weight"] = state[f"{name}.weight"]
        sd[f"layers.{j}.affine_weight"] = state[f"{name}.affine.weight"]
        sd[f"layers.{j}.affine_bias"] = state[f"{name}.affine.bias"]
        sd[f"layers.{j}.bias"] = state[f"{name}.bias"]
        if f"{name}.noise_strength" in state:
            sd[f"layers.{j}.noise_strength"] = state[f"{name}.noise_strength"].reshape([])
            sd[f"layers.{j}.noise_const"] = state[f"{name}.noise_const"].reshape(1, 1, res, res)
        else:  # use_noise=False
            sd[f"layers.{j}.noise_strength"] = torch.zeros([])
            sd[f"layers.{j}.noise_const"] = torch.zeros(1, 1, res, res)
    for t, r in enumerate(blocks):
        name = f"synthesis.b{r}.torgb"
        sd[f"torgbs.{t}.weight"] = state[f"{name}.weight"]
        sd[f"torgbs.{t}.affine_weight"] = state[f"{name}.affine.weight"]
        sd[f"torgbs.{t}.affine_bias"] = state[f"{name}.affine.bias"]
        sd[f"torgbs.{t}.bias"] = state[f"{name}.bias"]
    # NVIDIA stores the normalised filter (sum 1) and applies the up-sampling gain up**2 = 4 at run time.
    f_conv = state.get(f"synthesis.b{blocks[1]}.conv0.resample_filter")
    f_rgb = state.get(f"synthesis.b{blocks[1]}.resample_filter")
    sd["conv_up_kernel"] = _k4() if f_conv is None else f_conv * 4
    sd["rgb_up_kernel"] = _k4() if f_rgb is None else f_rgb * 4
    return spec, sd


# ---------------------------------------------------------------------------------------------------- build
def _build(spec: GeneratorSpec, sd: Dict[str, torch.Tensor], device: Union[str, torch.device]) -> StyleGAN2Generator:
    with torch.device("meta"):
        G = StyleGAN2Generator(spec)
    sd = {k: v.detach().to(device=device, dtype=torch.float32) for k, v in sd.items()}
    expected = set(G.state_dict().keys())
    if "w_avg" not in sd:
        sd["w_avg"] = torch.zeros(spec.w_dim, device=device)
    missing, unexpected = expected - set(sd), set(sd) - expected
    if missing or unexpected:
        raise CheckpointFormatError(
            f"internal conversion mismatch: missing {sorted(missing)}, extra {sorted(unexpected)}"
        )
    for name, param in G.state_dict().items():
        if tuple(param.shape) != tuple(sd[name].shape):
            raise CheckpointFormatError(
                f"weight {name} has shape {tuple(sd[name].shape)}, expected {tuple(param.shape)} for the inferred "
                f"architecture (corrupt checkpoint?)"
            )
    G.load_state_dict(sd, assign=True)
    G.eval().requires_grad_(False)
    return G


def _w_avg_from_latent_avg(latent_avg: Any, w_dim: int) -> Optional[torch.Tensor]:
    if latent_avg is None:
        return None
    if not isinstance(latent_avg, torch.Tensor) or latent_avg.shape[-1] != w_dim or latent_avg.ndim > 2:
        raise CheckpointFormatError(
            f"'latent_avg' must be a tensor [{w_dim}] or [n, {w_dim}], got "
            f"{tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__}"
        )
    return latent_avg.float() if latent_avg.ndim == 1 else latent_avg.float().mean(0)


def generator_from_checkpoint(
    ckpt: Mapping[str, Any],
    network: str = "G_ema",
    device: Union[str, torch.device] = "cpu",
    mapping_lr_mul: Optional[float] = None,
) -> StyleGAN2Generator:
    """Build a generator from an already-loaded checkpoint object.

    Accepts a rosinality checkpoint dict (``g_ema`` [+ ``latent_avg``]), a bare rosinality ``g_ema`` state dict,
    an unpickled NVIDIA network dict (``G_ema`` / ``G`` :class:`PersistentRecord`), or a bare NVIDIA generator
    state dict (``mapping.*`` / ``synthesis.*`` keys).
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointFormatError(f"got {_describe_keys(ckpt)}; {EXPECTED}")
    if network not in ("G_ema", "G"):
        raise ValueError(f"network must be 'G_ema' or 'G', got {network!r}")
    if isinstance(ckpt.get("G_ema"), PersistentRecord) or isinstance(ckpt.get("G"), PersistentRecord):
        rec = ckpt.get(network)
        if not isinstance(rec, PersistentRecord):
            rec = ckpt.get("G_ema") if network == "G" else ckpt.get("G")
        if rec.class_name != "Generator":
            raise CheckpointFormatError(f"network '{network}' is a {rec.class_name}, expected a Generator")
        spec, sd = nvidia_spec_and_state(rec.flatten(), rec.attributes(), mapping_lr_mul)
        spec.extra["network"] = network if ckpt.get(network) is rec else ("G" if network == "G_ema" else "G_ema")
        spec.extra["w_avg"] = "checkpoint mapping.w_avg"
        return _build(spec, sd, device)
    if "mapping.fc0.weight" in ckpt and "synthesis.b4.const" in ckpt:
        spec, sd = nvidia_spec_and_state(ckpt, None, mapping_lr_mul)
        spec.extra["w_avg"] = "checkpoint mapping.w_avg"
        return _build(spec, sd, device)
    if "g_ema" in ckpt or "input.input" in ckpt:
        g_ema = ckpt.get("g_ema", ckpt)
        if not isinstance(g_ema, Mapping):
            raise CheckpointFormatError(f"'g_ema' is {_describe_keys(g_ema)}, expected a state dict; {EXPECTED}")
        spec, sd = rosinality_spec_and_state(g_ema, mapping_lr_mul)
        w_avg = _w_avg_from_latent_avg(ckpt.get("latent_avg"), spec.w_dim)
        G = _build(spec, sd, device)
        if w_avg is None:
            G.w_avg.copy_(G.estimate_w_avg())
            spec.extra["w_avg"] = "estimated: mean mapping output over 4096 normal z (seed 0)"
        else:
            G.w_avg.copy_(w_avg)
            spec.extra["w_avg"] = "checkpoint latent_avg"
        return G
    hint = ""
    if "state_dict" in ckpt and isinstance(ckpt.get("opts"), Mapping):
        hint = " (this looks like an e4e/pSp encoder checkpoint: pass it as the encoder, and the generator separately)"
    elif "training_set_kwargs" in ckpt or "D" in ckpt:
        hint = " (NVIDIA pickle without a generator)"
    raise CheckpointFormatError(f"{EXPECTED}; got {_describe_keys(ckpt)}{hint}")


def load_generator(
    source: Union[str, os.PathLike, Mapping[str, Any]],
    network: str = "G_ema",
    device: Union[str, torch.device] = "cpu",
    mapping_lr_mul: Optional[float] = None,
) -> StyleGAN2Generator:
    """Load a StyleGAN2 generator (eval mode, ``requires_grad=False``, float32) from a file or checkpoint dict.

    Args:
        source: path of an NVIDIA ``.pkl`` or rosinality ``.pt`` (format sniffed), or an already-loaded dict.
        network: NVIDIA pickles only: "G_ema" (default) or "G" (the non-EMA training generator).
        device: where to put the weights.
        mapping_lr_mul: override the mapping network's learning-rate multiplier (not stored in rosinality files).
    """
    if isinstance(source, Mapping):
        return generator_from_checkpoint(source, network, device, mapping_lr_mul)
    _, obj = read_checkpoint(source)
    try:
        G = generator_from_checkpoint(obj, network, device, mapping_lr_mul)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{source}: {err}") from None
    G.spec.extra["path"] = str(source)
    return G
