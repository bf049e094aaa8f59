"""Training a small StyleGAN2 (generator + residual discriminator) and saving it as a rosinality ``.pt``.

The generator trained here *is* :class:`~nerfeditor_ns.gan.stylegan2.StyleGAN2Generator`: a random rosinality-layout
``g_ema`` state dict (:func:`init_rosinality_g_ema`, rosinality's initialisation and equalised-lr conventions) is
loaded with :func:`~nerfeditor_ns.gan.checkpoints.generator_from_checkpoint`, its parameters are trained, and
:func:`~nerfeditor_ns.gan.checkpoints.generator_to_rosinality` writes it back through the loader's own key map, so
the saved file loads with ``load_generator`` like any user checkpoint and reproduces the trained module exactly.

Objective (StyleGAN2, Karras et al. 2020, Sec. 2 / App. B, as in rosinality's ``train.py``):

* D: non-saturating logistic loss ``softplus(D(G(z))) + softplus(-D(x))``, plus the lazy R1 penalty
  ``gamma/2 * E||grad_x D(x)||^2`` every ``d_reg_every`` steps (scaled by ``d_reg_every``) [Mescheder et al. 2018].
* G: ``softplus(-D(G(z)))`` with style mixing. Path-length regularisation is left out (it matters for
  smoothness of large generators, costs an extra backward pass, and this one is trained on CPU).
* EMA of the generator weights with the stylegan2-ada half-life ramp-up; DiffAugment (Zhao et al. 2020,
  colour + translation, applied to real and fake images before D) against discriminator over-fitting on small data.
"""

from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.demo_gan.discriminator import ResidualDiscriminator
from nerfeditor_ns.gan.checkpoints import DEFAULT_MAPPING_LR_MUL, generator_from_checkpoint
from nerfeditor_ns.gan.stylegan2 import StyleGAN2Generator

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ------------------------------------------------------------------------------------------------ configuration
@dataclass
class FaceGANConfig:
    """Architecture and optimisation of the small StyleGAN2 (all sizes are free; defaults give a ~3 MB file)."""

    resolution: int = 32
    """Image side in pixels (power of two >= 8)."""
    style_dim: int = 128
    """Latent size: z_dim = w_dim = width of the mapping MLP (rosinality ``style_dim``)."""
    n_mlp: int = 4
    """Number of fully connected layers of the mapping network (rosinality ``n_mlp``)."""
    channels: Tuple[int, ...] = (128, 128, 64, 32)
    """Generator feature channels at resolutions 4, 8, 16, ... (one entry per block); the discriminator mirrors
    them."""
    lr: float = 0.002
    """Adam learning rate of G and D (rosinality default; the mapping network's lr multiplier 0.01 is built into its
    weight parametrisation)."""
    beta2: float = 0.99
    """Adam beta2 (beta1 is 0 as in StyleGAN2)."""
    r1_gamma: float = 0.05
    """R1 penalty weight gamma (StyleGAN2 uses 10 at 1024 px; the stylegan2-ada heuristic 0.0002 res^2 / batch gives
    ~0.01 at 32 px, batch 16)."""
    d_reg_every: int = 16
    """Lazy regularisation interval: R1 is applied every this many D steps (scaled accordingly)."""
    mixing_prob: float = 0.9
    """Probability of style mixing (two z, random crossover row) in a training batch."""
    ema_half_life_images: int = 5000
    """Half-life of the generator EMA, in images shown (stylegan2-ada ``ema_kimg``)."""
    ema_rampup: float = 0.05
    """EMA ramp-up: the half-life is at most ``ema_rampup`` x images shown so far (None-like when 0)."""
    augment: Tuple[str, ...] = ("color", "translation")
    """DiffAugment policies applied to every image D sees (real and fake): any of "color", "translation"; empty
    for none."""
    mbstd_group_size: int = 4
    """Minibatch standard-deviation group size of the discriminator epilogue."""

    def channel_table(self) -> Dict[int, int]:
        """{resolution: channels} for 4 ... resolution."""
        res = [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]
        if self.resolution < 8 or 2 ** int(math.log2(self.resolution)) != self.resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if len(self.channels) != len(res):
            raise ValueError(
                f"channels needs one entry per block resolution {res} ({len(res)} entries), got {len(self.channels)}"
            )
        return {r: int(c) for r, c in zip(res, self.channels)}

    def architecture(self) -> Dict[str, Any]:
        """The fields that fix tensor shapes (a resumed run must match them)."""
        return {
            "resolution": self.resolution,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channels": list(self.channels),
        }


# --------------------------------------------------------------------------------- rosinality state-dict layout
def _k4() -> Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / 16.0  # sum 4 = the 2x up-sampling gain, as stored by rosinality


def init_rosinality_g_ema(config: FaceGANConfig, seed: int = 0) -> "OrderedDict[str, Tensor]":
    """A freshly initialised rosinality ``Generator`` state dict (key order and init of ``stylegan2-pytorch``).

    Initialisation (equalised learning rate: stored weights are N(0, 1), scaled at run time): mapping
    ``style.i.weight ~ N(0, 1) / lr_mul`` with ``lr_mul = 0.01`` and zero biases; modulation weights N(0, 1) with
    biases 1; conv weights N(0, 1); noise strengths, activation biases and ToRGB biases 0; constant input N(0, 1);
    fixed noise buffers N(0, 1); FIR kernels ``outer([1,3,3,1],[1,3,3,1]) / 16`` (sum 4).
    """
    ch = config.channel_table()
    d = config.style_dim
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g)

    sd: "OrderedDict[str, Tensor]" = OrderedDict()
    for i in range(1, config.n_mlp + 1):
        sd[f"style.{i}.weight"] = randn(d, d) / DEFAULT_MAPPING_LR_MUL
        sd[f"style.{i}.bias"] = torch.zeros(d)
    sd["input.input"] = randn(1, ch[4], 4, 4)

    def styled_conv(name: str, cin: int, cout: int, up: bool) -> None:
        sd[f"{name}.conv.weight"] = randn(1, cout, cin, 3, 3)
        if up:
            sd[f"{name}.conv.blur.kernel"] = _k4()
        sd[f"{name}.conv.modulation.weight"] = randn(cin, d)
        sd[f"{name}.conv.modulation.bias"] = torch.ones(cin)
        sd[f"{name}.noise.weight"] = torch.zeros(1)
        sd[f"{name}.activate.bias"] = torch.zeros(cout)

    def to_rgb(name: str, cin: int, up: bool) -> None:
        sd[f"{name}.bias"] = torch.zeros(1, 3, 1, 1)
        if up:
            sd[f"{name}.upsample.kernel"] = _k4()
        sd[f"{name}.conv.weight"] = randn(1, 3, cin, 1, 1)
        sd[f"{name}.conv.modulation.weight"] = randn(cin, d)
        sd[f"{name}.conv.modulation.bias"] = torch.ones(cin)

    styled_conv("conv1", ch[4], ch[4], up=False)
    to_rgb("to_rgb1", ch[4], up=False)
    resolutions = sorted(ch)
    for j, r in enumerate(resolutions[1:]):
        styled_conv(f"convs.{2 * j}", ch[r // 2], ch[r], up=True)
        styled_conv(f"convs.{2 * j + 1}", ch[r], ch[r], up=False)
    for j, r in enumerate(resolutions[1:]):
        to_rgb(f"to_rgbs.{j}", ch[r], up=True)
    noise_res = [4] + [r for r in resolutions[1:] for _ in (0, 1)]
    for i, r in enumerate(noise_res):
        sd[f"noises.noise_{i}"] = randn(1, 1, r, r)
    return sd


def build_trainable_generator(config: FaceGANConfig, seed: int = 0) -> StyleGAN2Generator:
    """A randomly initialised generator, built through the rosinality loader, with ``requires_grad`` on."""
    G = generator_from_checkpoint({"g_ema": init_rosinality_g_ema(config, seed)})
    # the loader returns an inference module (eval, frozen, w_avg estimated); training needs gradients
    return G.train().requires_grad_(True)


# ------------------------------------------------------------------------------------------------------ losses
def d_logistic_loss(real_pred: Float[Tensor, "B 1"], fake_pred: Float[Tensor, "B 1"]) -> Tensor:
    """Discriminator logistic loss: E[softplus(D(G(z)))] + E[softplus(-D(x))] (Goodfellow et al. 2014)."""
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred: Float[Tensor, "B 1"]) -> Tensor:
    """Non-saturating generator loss: E[softplus(-D(G(z)))] = E[-log sigmoid(D(G(z)))]."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: Float[Tensor, "B 1"], real_img: Float[Tensor, "B C H W"]) -> Tensor:
    """R1 gradient penalty E_x ||grad_x D(x)||^2 (Mescheder et al. 2018, Eq. 9 without the gamma/2 factor).

    ``real_img`` must have ``requires_grad=True`` and be the tensor ``real_pred`` was computed from; the graph is
    kept (``create_graph``) so the penalty can be back-propagated into D's weights.
    """
    if not real_img.requires_grad:
        raise ValueError("r1_penalty needs real_img.requires_grad = True (set it before running D on it)")
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.square().reshape(grad.shape[0], -1).sum(1).mean()


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G on parameters; buffers copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def ema_beta(batch_size: int, images_seen: int, half_life_images: int, rampup: float) -> float:
    """EMA decay per step for a half-life in images, ramped up early in training (stylegan2-ada)."""
    half_life = float(half_life_images)
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


# ------------------------------------------------------------------------------------------------ augmentation
def diff_augment(
    x: Float[Tensor, "B 3 H W"], policies: Sequence[str], generator: Optional[torch.Generator] = None
) -> Float[Tensor, "B 3 H W"]:
    """DiffAugment (Zhao et al. 2020): differentiable random colour / translation, fresh per sample.

    "color": brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) (images in [-1, 1], so
    brightness is applied on the [-1, 1] scale x 2); "translation": integer shift of up to 1/8 of the side with
    zero padding.
    """
    b, _, h, w = x.shape
    dev = x.device

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator).to(dev, x.dtype)

    for policy in policies:
        if policy == "color":
            x = x + (u(b, 1, 1, 1) - 0.5) * 2.0
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (u(b, 1, 1, 1) * 2.0) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (u(b, 1, 1, 1) + 0.5) + mean
        elif policy == "translation":
            sy, sx = max(h // 8, 1), max(w // 8, 1)
            ty = (u(b) * (2 * sy + 1)).long().clamp(max=2 * sy).tolist()
            tx = (u(b) * (2 * sx + 1)).long().clamp(max=2 * sx).tolist()
            padded = F.pad(x, [sx, sx, sy, sy])
            x = torch.stack([padded[i, :, ty[i] : ty[i] + h, tx[i] : tx[i] + w] for i in range(b)])
        else:
            raise ValueError(f"unknown augmentation policy {policy!r}; use 'color' and/or 'translation'")
    return x


# ---------------------------------------------------------------------------------------------------- training
class FaceGANTrainer:
    """G, D, G_ema and their Adam optimisers with one-call training steps and a resumable state dict."""

    def __init__(self, config: FaceGANConfig, seed: int = 0, device: Union[str, torch.device] = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.G = build_trainable_generator(config, seed).to(self.device)
        self.D = ResidualDiscriminator(config.resolution, config.channel_table(), config.mbstd_group_size).to(
            self.device
        )
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # lazy regularisation: D's Adam hyper-parameters corrected for the extra R1 steps (StyleGAN2 App. B)
        c = config.d_reg_every / (config.d_reg_every + 1)
        self.g_optim = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(0.0, config.beta2))
        self.d_optim = torch.optim.Adam(self.D.parameters(), lr=config.lr * c, betas=(0.0, config.beta2**c))
        self.step = 0
        self.images_seen = 0
        self.rng = torch.Generator().manual_seed(seed + 1)

    # ------------------------------------------------------------------ sampling
    def sample_ws(self, batch: int) -> Float[Tensor, "B num_ws w_dim"]:
        """Training latents: z ~ N(0, I) mapped to W+, with style mixing at a random crossover row."""
        G = self.G
        z = torch.randn(batch, G.z_dim, generator=self.rng).to(self.device)
        ws = G.mapping(z)
        if self.config.mixing_prob > 0 and float(torch.rand([], generator=self.rng)) < self.config.mixing_prob:
            z2 = torch.randn(batch, G.z_dim, generator=self.rng).to(self.device)
            cut = int(torch.randint(1, G.num_ws, [], generator=self.rng))
            ws = torch.cat([ws[:, :cut], G.mapping(z2)[:, cut:]], dim=1)
        return ws

    def generate(self, batch: int) -> Float[Tensor, "B 3 H W"]:
        noise = [
            torch.randn(batch, 1, layer.resolution, layer.resolution, generator=self.rng).to(self.device)
            for layer in self.G.layers
        ]
        return self.G.synthesis(self.sample_ws(batch), noise=noise)

    def _augment(self, x: Tensor) -> Tensor:
        return diff_augment(x, self.config.augment, self.rng) if self.config.augment else x

    # -------------------------------------------------------------------- a step
    def train_step(self, real: Float[Tensor, "B 3 H W"]) -> Dict[str, float]:
        """One D step (+ lazy R1), one G step, one EMA update. ``real`` in [-1, 1]. Returns the losses."""
        cfg = self.config
        real = real.to(self.device, torch.float32)
        batch = real.shape[0]
        logs: Dict[str, float] = {}

        # discriminator: logistic loss on augmented real / fake images
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self.generate(batch)
        real_pred = self.D(self._augment(real))
        fake_pred = self.D(self._augment(fake))
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        logs["d_loss"] = d_loss.item()
        logs["real_score"] = real_pred.detach().mean().item()
        logs["fake_score"] = fake_pred.detach().mean().item()

        if cfg.r1_gamma > 0 and self.step % cfg.d_reg_every == 0:
            real_aug = self._augment(real).detach().requires_grad_(True)
            real_pred = self.D(real_aug)
            r1 = r1_penalty(real_pred, real_aug)
            self.d_optim.zero_grad(set_to_none=True)
            (cfg.r1_gamma / 2 * r1 * cfg.d_reg_every + 0 * real_pred[0, 0]).backward()
            self.d_optim.step()
            logs["r1"] = r1.item()

        # generator: non-saturating loss
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        fake_pred = self.D(self._augment(self.generate(batch)))
        g_loss = g_nonsaturating_loss(fake_pred)
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()
        self.D.requires_grad_(True)
        logs["g_loss"] = g_loss.item()

        self.images_seen += batch
        ema_update(self.G_ema, self.G, ema_beta(batch, self.images_seen, cfg.ema_half_life_images, cfg.ema_rampup))
        self.step += 1
        return logs

    # ---------------------------------------------------------------- state I/O
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume bit-for-bit (tensors and plain containers only: loads with weights_only)."""
        return {
            "architecture": self.config.architecture(),
            "config": _plain(asdict(self.config)),
            "step": self.step,
            "images_seen": self.images_seen,
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.D.state_dict(),
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the architecture must match this trainer's config."""
        arch = self.config.architecture()
        saved = dict(state.get("architecture", {}))
        if saved != arch:
            raise ValueError(
                f"the training state was made with architecture {saved}, but this run is configured with {arch}; "
                "pass the same architecture flags, or start fresh in another output directory"
            )
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        # deep copies: Adam keeps same-device state tensors as given, which would alias another trainer's state
        self.g_optim.load_state_dict(copy.deepcopy(state["g_optim"]))
        self.d_optim.load_state_dict(copy.deepcopy(state["d_optim"]))
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])


def _plain(obj: Any) -> Any:
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj


# -------------------------------------------------------------------------------------------------------- data
def load_image_folder(
    directory: Union[str, os.PathLike], resolution: int, limit: Optional[int] = None
) -> Float[Tensor, "N 3 R R"]:
    """All images of a folder (sorted by name), resized with an anti-aliased filter to ``resolution``, in [-1, 1]."""
    from PIL import Image

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder not found: {directory} (pass --data DIR with the training faces)")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    out: List[Tensor] = []
    for p in files:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), Image.Resampling.LANCZOS, reducing_gap=3.0)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            out.append(data.reshape(resolution, resolution, 3).permute(2, 0, 1))
    return torch.stack(out).float() / 127.5 - 1.0


def sample_batch(
    images: Float[Tensor, "N 3 R R"], batch: int, generator: torch.Generator, xflip: bool = True
) -> Float[Tensor, "B 3 R R"]:
    """Random batch (with replacement), each image mirrored left-right with probability 1/2 when ``xflip``."""
    idx = torch.randint(0, images.shape[0], (batch,), generator=generator)
    x = images[idx]
    if xflip:
        flip = torch.rand(batch, generator=generator) < 0.5
        x = torch.where(flip.reshape(-1, 1, 1, 1), x.flip(3), x)
    return x


def image_grid(images: Float[Tensor, "N 3 H W"], nrow: int, scale: int = 1) -> "Any":
    """A PIL image of ``images`` (in [-1, 1], clamped) tiled ``nrow`` per row, each upscaled ``scale`` x (nearest)."""
    from PIL import Image

    n, _, h, w = images.shape
    ncol = math.ceil(n / nrow)
    x = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if n < ncol * nrow:
        x = torch.cat([x, torch.zeros(ncol * nrow - n, 3, h, w, dtype=torch.uint8)])
    x = x.reshape(ncol, nrow, 3, h, w).permute(0, 3, 1, 4, 2).reshape(ncol * h, nrow * w, 3)
    if scale > 1:
        x = x.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return Image.fromarray(x.numpy())
