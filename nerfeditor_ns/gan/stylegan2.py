"""StyleGAN2 generator (config-f, skip architecture) in pure PyTorch, for both public checkpoint formats.

One module serves the rosinality (``stylegan2-pytorch``) and NVIDIA (``stylegan2-ada-pytorch`` / ``stylegan3``'s
StyleGAN2) checkpoints: the two compute the same function up to a few explicit constants that live in
:class:`GeneratorSpec` (equalised-lr gain of the 3x3 weights, activation clamp, truncation formula). Weights come
from :mod:`nerfeditor_ns.gan.checkpoints`, which converts either layout to the one used here.

The synthesis network is split at a hidden resolution for NeRFEditor's hidden mapper (paper Sec. 3.3):
``G_geo = synthesis_features`` (blocks up to ``res``) and ``G_style = synthesis_from_features`` (the rest). The
hidden map is ``concat(feature map, RGB skip)`` so that ``G_style`` continues exactly where ``G_geo`` stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.ops import bias_lrelu, modulated_conv2d, normalize_2nd_moment, upfirdn2d, upfirdn_padding

NOISE_MODES = ("const", "random", "none")


@dataclass
class GeneratorSpec:
    """Architecture and per-format constants of a StyleGAN2 generator (inferred from checkpoint weights)."""

    resolution: int
    """Output image side (a power of two >= 8)."""
    channels: Dict[int, int]
    """Feature channels of the synthesis block at each resolution 4 ... resolution."""
    z_dim: int = 512
    """Input latent dimension."""
    w_dim: int = 512
    """Intermediate latent (W) dimension."""
    mapping_layers: int = 8
    """Number of fully connected layers of the mapping network."""
    mapping_lr_mul: float = 0.01
    """Equalised learning-rate multiplier of the mapping network (not stored in weights; both codes use 0.01)."""
    mapping_hidden: Optional[int] = None
    """Width of the hidden mapping layers (defaults to w_dim)."""
    conv_clamp: Optional[float] = None
    """Clamp of the synthesis activations (NVIDIA ``conv_clamp``, 256 in stylegan2-ada); None = no clamp."""
    equalized_conv_weights: bool = True
    """rosinality scales the 3x3 weights by 1/sqrt(fan_in) before modulation; NVIDIA does not (demodulation makes
    the two equal up to the 1e-8 epsilon)."""
    truncation: str = "rosinality"
    """Truncation formula: "rosinality" (w_avg + psi (w - w_avg) before broadcast) or "nvidia" (w_avg.lerp)."""
    source_format: str = "rosinality"
    """Checkpoint format the weights came from: "rosinality" or "nvidia"."""
    extra: Dict[str, object] = field(default_factory=dict)
    """Free-form provenance (file path, network name, how w_avg was obtained)."""

    @property
    def block_resolutions(self) -> List[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]


class _SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up-sampling) + noise + bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: int) -> None:
        super().__init__()
        self.up = up
        self.resolution = resolution
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, 3, 3))
        self.affine_weight = nn.Parameter(torch.zeros(in_ch, w_dim))
        self.affine_bias = nn.Parameter(torch.ones(in_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise_const", torch.zeros(1, 1, resolution, resolution))


class _ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation + bias."""

    def __init__(self, in_ch: int, w_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, in_ch, 1, 1))
        self.affine_weight = nn.Parameter(torch.zeros(in_ch, w_dim))
        self.affine_bias = nn.Parameter(torch.ones(in_ch))
        self.bias = nn.Parameter(torch.zeros(3))


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> W+), ``synthesis`` (W+ -> image in about [-1, 1]).

    Parameter layout (format-neutral): ``mapping_weights.{i}`` / ``mapping_biases.{i}``, ``w_avg``, ``const``,
    ``layers.{j}`` (the 3x3 modulated convs in order, layer j uses ``ws[:, j]``), ``torgbs.{t}`` (block t's ToRGB,
    uses ``ws[:, 2t + 1]``), ``conv_up_kernel`` / ``rgb_up_kernel`` (FIR filters, gain 4 included).
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        self.spec = spec
        res = spec.block_resolutions
        if spec.resolution < 8 or 2 ** int(math.log2(spec.resolution)) != spec.resolution:
            raise ValueError(f"StyleGAN2 resolution must be a power of two >= 8, got {spec.resolution}")
        hidden = spec.mapping_hidden or spec.w_dim
        dims = [spec.z_dim] + [hidden] * (spec.mapping_layers - 1) + [spec.w_dim]
        self.mapping_weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(dims[i + 1], dims[i])) for i in range(spec.mapping_layers)]
        )
        self.mapping_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(dims[i + 1])) for i in range(spec.mapping_layers)]
        )
        self.register_buffer("w_avg", torch.zeros(spec.w_dim))
        self.const = nn.Parameter(torch.zeros(spec.channels[4], 4, 4))
        layers = [_SynthesisLayer(spec.channels[4], spec.channels[4], spec.w_dim, 4, up=1)]
        torgbs = [_ToRGB(spec.channels[4], spec.w_dim)]
        for r in res[1:]:
            layers.append(_SynthesisLayer(spec.channels[r // 2], spec.channels[r], spec.w_dim, r, up=2))
            layers.append(_SynthesisLayer(spec.channels[r], spec.channels[r], spec.w_dim, r, up=1))
            torgbs.append(_ToRGB(spec.channels[r], spec.w_dim))
        self.layers = nn.ModuleList(layers)
        self.torgbs = nn.ModuleList(torgbs)
        # standard FIR filter outer([1,3,3,1],[1,3,3,1]) / 16 (sum 4 = the 2x up-sampling gain); plain floats so
        # construction on the meta device (used by the loader) dispatches no Python decompositions
        k4 = [[a * b / 16.0 for b in (1.0, 3.0, 3.0, 1.0)] for a in (1.0, 3.0, 3.0, 1.0)]
        self.register_buffer("conv_up_kernel", torch.tensor(k4))
        self.register_buffer("rgb_up_kernel", torch.tensor(k4))

    # ------------------------------------------------------------------ sizes
    @property
    def z_dim(self) -> int:
        return self.spec.z_dim

    @property
    def w_dim(self) -> int:
        return self.spec.w_dim

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    @property
    def num_ws(self) -> int:
        """Number of W+ rows: 2 log2(resolution) - 2 (18 at 1024)."""
        return 2 * int(math.log2(self.spec.resolution)) - 2

    @property
    def num_layers(self) -> int:
        """Number of 3x3 synthesis layers (= number of noise inputs) = num_ws - 1."""
        return len(self.layers)

    @property
    def block_resolutions(self) -> List[int]:
        return self.spec.block_resolutions

    @property
    def feature_resolutions(self) -> List[int]:
        """Resolutions accepted by ``synthesis_features(upto=...)``: every block but the last."""
        return self.spec.block_resolutions[:-1]

    def feature_channels(self, res: int) -> int:
        """Channels of the hidden map at ``res``: C_res feature channels + 3 RGB-skip channels."""
        self._check_feature_res(res)
        return self.spec.channels[res] + 3

    def style_start(self, res: int) -> int:
        """First ``ws`` row used by ``synthesis_from_features`` after ``res`` (= 2 log2(res) - 3).

        G_style uses exactly ``ws[:, style_start(res):]``; G_geo uses ``ws[:, :style_start(res) + 1]`` (the ToRGB of
        block ``res`` reads the same row as the next block's first conv, as in both reference implementations).
        """
        self._check_feature_res(res)
        return 2 * int(math.log2(res)) - 3

    def _check_feature_res(self, res: int) -> None:
        if res not in self.feature_resolutions:
            raise ValueError(
                f"hidden-map resolution {res} is not available for this {self.resolution}px generator; "
                f"choose one of {self.feature_resolutions}"
            )

    # --------------------------------------------------------------- mapping
    def z_to_w(self, z: Float[Tensor, "B z_dim"]) -> Float[Tensor, "B w_dim"]:
        """Mapping network without truncation or broadcast: PixelNorm + equalised-lr FC layers with lrelu."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)}")
        lr = self.spec.mapping_lr_mul
        x = normalize_2nd_moment(z.to(torch.float32))
        for weight, bias in zip(self.mapping_weights, self.mapping_biases):
            gain = lr / math.sqrt(weight.shape[1])
            x = bias_lrelu(F.linear(x, weight * gain), bias * lr)
        return x

    def truncate(
        self, ws: Float[Tensor, "B N D"], truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None
    ) -> Float[Tensor, "B N D"]:
        """Truncation trick toward ``w_avg`` on the first ``truncation_cutoff`` rows (all when None)."""
        if truncation_psi == 1:
            return ws
        cutoff = ws.shape[1] if truncation_cutoff is None else truncation_cutoff
        head = ws[:, :cutoff]
        if self.spec.truncation == "nvidia":
            head = self.w_avg.lerp(head, truncation_psi)
        else:
            head = self.w_avg + truncation_psi * (head - self.w_avg)
        return torch.cat([head, ws[:, cutoff:]], dim=1)

    def mapping(
        self,
        z: Float[Tensor, "B z_dim"],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
    ) -> Float[Tensor, "B num_ws w_dim"]:
        """z -> W+ (broadcast over the num_ws rows), truncated toward ``w_avg`` by ``truncation_psi``."""
        w = self.z_to_w(z)
        if self.spec.truncation != "nvidia" and truncation_psi != 1 and truncation_cutoff is None:
            # rosinality applies truncation to w before the broadcast.
            w = self.w_avg + truncation_psi * (w - self.w_avg)
            return w.unsqueeze(1).repeat(1, self.num_ws, 1)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return self.truncate(ws, truncation_psi, truncation_cutoff)

    # ------------------------------------------------------------- synthesis
    def make_noise(
        self,
        batch: int,
        noise_mode: str = "const",
        generator: Optional[torch.Generator] = None,
    ) -> List[Optional[Tensor]]:
        """Noise inputs of all ``num_layers`` layers for ``noise_mode``.

        "const": the checkpoint's stored noise; "random": fresh normal noise (drawn for all layers in order, from
        ``generator`` if given, so a seeded generator reproduces it); "none": no noise.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise_mode == "none":
            return [None] * self.num_layers
        if noise_mode == "const":
            return [layer.noise_const for layer in self.layers]
        device = self.const.device
        return [
            torch.randn(batch, 1, layer.resolution, layer.resolution, device=device, generator=generator)
            for layer in self.layers
        ]

    def _check_ws(self, ws: Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")

    def _resolve_noise(
        self,
        ws: Tensor,
        noise_mode: str,
        noise: Optional[Sequence[Optional[Tensor]]],
        generator: Optional[torch.Generator],
    ) -> Sequence[Optional[Tensor]]:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must be a list of {self.num_layers} tensors (one per layer), got {len(noise)}")
            return noise
        return self.make_noise(ws.shape[0], noise_mode, generator)

    def _layer(self, j: int, x: Tensor, ws: Tensor, noise: Optional[Tensor]) -> Tensor:
        layer = self.layers[j]
        styles = F.linear(ws[:, j], layer.affine_weight * (1.0 / math.sqrt(self.w_dim)), layer.affine_bias)
        weight = layer.weight
        if self.spec.equalized_conv_weights:
            weight = weight * (1.0 / math.sqrt(weight[0].numel()))
        x = modulated_conv2d(x, weight, styles, demodulate=True, up=layer.up, blur_kernel=self.conv_up_kernel)
        if noise is not None:
            x = x + layer.noise_strength * noise.to(x.dtype)
        return bias_lrelu(x, layer.bias, clamp=self.spec.conv_clamp)

    def _torgb(self, t: int, x: Tensor, ws: Tensor, img: Optional[Tensor]) -> Tensor:
        rgb = self.torgbs[t]
        styles = F.linear(ws[:, 2 * t + 1], rgb.affine_weight * (1.0 / math.sqrt(self.w_dim)), rgb.affine_bias)
        weight = rgb.weight * (1.0 / math.sqrt(rgb.weight.shape[1]))
        y = modulated_conv2d(x, weight, styles, demodulate=False) + rgb.bias.reshape(1, -1, 1, 1)
        if self.spec.conv_clamp is not None:
            y = y.clamp(-self.spec.conv_clamp, self.spec.conv_clamp)
        if img is None:
            return y
        up = upfirdn2d(img, self.rgb_up_kernel, up=2, pad=upfirdn_padding(self.rgb_up_kernel.shape[0], 2, 1))
        return up + y

    def _block(
        self,
        res: int,
        x: Optional[Tensor],
        img: Optional[Tensor],
        ws: Tensor,
        noises: Sequence[Optional[Tensor]],
        record: Optional[Dict[str, Tensor]],
    ) -> Tuple[Tensor, Tensor]:
        t = int(math.log2(res)) - 2  # block index
        if t == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self._layer(0, x, ws, noises[0])
        else:
            x = self._layer(2 * t - 1, x, ws, noises[2 * t - 1])
            x = self._layer(2 * t, x, ws, noises[2 * t])
        img = self._torgb(t, x, ws, img)
        if record is not None:
            record[f"act_{res}"] = x
            record[f"rgb_{res}"] = img
        return x, img

    def synthesis(
        self,
        ws: Float[Tensor, "B num_ws w_dim"],
        noise_mode: str = "const",
        noise: Optional[Sequence[Optional[Tensor]]] = None,
        generator: Optional[torch.Generator] = None,
        record: Optional[Dict[str, Tensor]] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """W+ -> image (not clamped). ``noise`` (explicit per-layer list) overrides ``noise_mode``.

        ``record``: optional dict filled with ``act_{res}`` (block output features) and ``rgb_{res}`` (RGB skip).
        """
        self._check_ws(ws)
        noises = self._resolve_noise(ws, noise_mode, noise, generator)
        x = img = None
        for res in self.block_resolutions:
            x, img = self._block(res, x, img, ws, noises, record)
        return img

    def synthesis_features(
        self,
        ws: Float[Tensor, "B num_ws w_dim"],
        upto: int,
        noise_mode: str = "const",
        noise: Optional[Sequence[Optional[Tensor]]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Float[Tensor, "B C3 R R"]:
        """G_geo (paper Sec. 3.3): the hidden map at ``upto`` = concat(features [C_res], RGB skip [3])."""
        self._check_ws(ws)
        self._check_feature_res(upto)
        noises = self._resolve_noise(ws, noise_mode, noise, generator)
        x = img = None
        for res in self.block_resolutions:
            x, img = self._block(res, x, img, ws, noises, None)
            if res == upto:
                break
        return torch.cat([x, img], dim=1)

    def synthesis_from_features(
        self,
        features: Float[Tensor, "B C3 R R"],
        ws: Float[Tensor, "B num_ws w_dim"],
        res: int,
        noise_mode: str = "const",
        noise: Optional[Sequence[Optional[Tensor]]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """G_style (paper Sec. 3.3): continue from the hidden map at ``res`` with ``ws[:, style_start(res):]``.

        With the same noise (same mode; for "random" the same seeded ``generator`` state or explicit ``noise``),
        ``synthesis_from_features(synthesis_features(ws, r), ws, r) == synthesis(ws)`` exactly.
        """
        self._check_ws(ws)
        channels = self.feature_channels(res)
        if features.ndim != 4 or features.shape[1:] != (channels, res, res) or features.shape[0] != ws.shape[0]:
            raise ValueError(
                f"hidden map at {res} must have shape [{ws.shape[0]}, {channels}, {res}, {res}], "
                f"got {tuple(features.shape)}"
            )
        noises = self._resolve_noise(ws, noise_mode, noise, generator)
        x, img = features[:, :-3], features[:, -3:]
        for r in self.block_resolutions:
            if r > res:
                x, img = self._block(r, x, img, ws, noises, None)
        return img

    def forward(
        self, z: Float[Tensor, "B z_dim"], truncation_psi: float = 1.0, noise_mode: str = "const"
    ) -> Float[Tensor, "B 3 H W"]:
        """z -> image."""
        return self.synthesis(self.mapping(z, truncation_psi=truncation_psi), noise_mode=noise_mode)

    @torch.no_grad()
    def estimate_w_avg(self, num: int = 4096, seed: int = 0, batch: int = 1024) -> Float[Tensor, "w_dim"]:
        """Mean of the mapping output over ``num`` normal z (seeded), as stylegan2 code estimates latent_avg."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(num, self.z_dim, generator=g).to(self.const.device)
        return torch.cat([self.z_to_w(z[i : i + batch]) for i in range(0, num, batch)]).mean(0)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"resolution={s.resolution}, z_dim={s.z_dim}, w_dim={s.w_dim}, num_ws={self.num_ws}, "
            f"mapping_layers={s.mapping_layers}, format={s.source_format}, conv_clamp={s.conv_clamp}"
        )
