"""GAN-inversion encoder E (e4e, "Designing an Encoder for StyleGAN Image Manipulation") and the paper's refinement MLP.

Paper Sec. 3.2: "most methods train an encoder E to map an image back to the latent code ... We add an MLP layer
on the top of a pre-trained encoder E to refine the predicted latent code for better GAN inversion."

`Encoder4Editing` reproduces encoder4editing's `models/encoders/psp_encoders.Encoder4Editing` (IR-SE50 body, a
feature pyramid over body units 6/20/23, one `GradualStyleBlock` per W+ row; row 0 is the base code, rows >= 1
add deltas) with the checkpoint's key layout, and adds `latent_avg` as `pSp.forward` does with
`start_from_latent_avg=True`. `RefinementMLP` is the trainable residual MLP on top of it; `refine_inversion`
fits it to one image.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.irse import (
    WeightsFileError,
    check_image_batch,
    load_exact_state,
    make_body,
    make_input_layer,
    num_layers_from_units,
    read_weights_file,
    strip_prefix,
)
from nerfeditor_ns.gan.losses import pixel_loss, resize_square

ENCODER_FLAG = "--encoder"  # the ns-edit option (or $NERFEDITOR_ENCODER)


class EqualLinear(nn.Module):
    """rosinality-style equalised linear layer (no activation): y = x @ (W * lr_mul / sqrt(in))^T + b * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    """Map a [B,C,s,s] feature map to one 512-d style: log2(s) stride-2 3x3 convs with LeakyReLU(0.01), then EqualLinear."""

    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        num_pools = int(round(math.log2(spatial)))
        layers: List[nn.Module] = [nn.Conv2d(in_c, out_c, 3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            layers += [nn.Conv2d(out_c, out_c, 3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.convs(x)
        return self.linear(x.reshape(-1, self.out_c))


def _upsample_add(x: Tensor, y: Tensor) -> Tensor:
    """FPN merge: bilinear (align_corners=True) upsampling of x to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """e4e encoder: `E(img [B,3,256,256] in [-1,1]) -> ws [B, n_styles, 512]` (latent_avg added).

    Args:
        n_styles: number of W+ rows (18 for a 1024 generator, 16 for 512, 14 for 256).
        num_layers: IR body depth (50 for the published encoders).
        use_se: IR-SE units (mode 'ir_se') or plain IR units (mode 'ir').
        spatials: input resolution of each style block's features (16 coarse, 32 middle, 64 fine by default);
            it sets how many stride-2 convs the block has.
    """

    coarse_ind = 3
    middle_ind = 7

    def __init__(self, n_styles: int = 18, num_layers: int = 50, use_se: bool = True,
                 spatials: Optional[List[int]] = None) -> None:
        super().__init__()
        if spatials is None:
            spatials = [16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64 for i in range(n_styles)]
        if len(spatials) != n_styles:
            raise ValueError(f"need one spatial size per style ({n_styles}), got {len(spatials)}")
        self.n_styles = n_styles
        self.input_layer = make_input_layer()
        self.body = make_body(num_layers, use_se)
        self.styles = nn.ModuleList([GradualStyleBlock(512, 512, s) for s in spatials])
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)
        self.register_buffer("latent_avg", torch.zeros(n_styles, 512))
        # indices of the body units whose outputs feed the pyramid (ends of the 128/256/512-channel stages)
        specs = [m.res_layer[1].out_channels for m in self.body]  # type: ignore[index]
        self.c1_index = max(i for i, c in enumerate(specs) if c == 128)
        self.c2_index = max(i for i, c in enumerate(specs) if c == 256)
        self.c3_index = len(specs) - 1
        self.progressive_stage = n_styles  # e4e ProgressiveStage.Inference: all deltas active

    def forward_features(self, x: Float[Tensor, "B 3 256 256"]) -> Dict[str, Tensor]:
        """Run the encoder and return intermediates: `c1`, `c2`, `c3`, `style_outputs` [B,n,512] (row 0 = base
        code, rows >= 1 = deltas), `codes_raw` [B,n,512] (before latent_avg) and `codes` (after)."""
        check_image_batch(x, "e4e encoder")
        h = self.input_layer(x)
        c1 = c2 = c3 = h
        for i, unit in enumerate(self.body):
            h = unit(h)
            if i == self.c1_index:
                c1 = h
            elif i == self.c2_index:
                c2 = h
            elif i == self.c3_index:
                c3 = h
        w0 = self.styles[0](c3)
        outputs = [w0]
        deltas = []
        features = c3
        p2 = c3
        for i in range(1, self.n_styles):
            if i == self.coarse_ind:
                p2 = _upsample_add(c3, self.latlayer1(c2))  # FPN middle level
                features = p2
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))  # FPN fine level
            delta = self.styles[i](features)
            outputs.append(delta)
            deltas.append(delta if i <= self.progressive_stage else torch.zeros_like(delta))
        codes_raw = w0[:, None, :] + torch.stack([torch.zeros_like(w0)] + deltas, dim=1)
        codes = codes_raw + self.latent_avg[None]
        return {
            "c1": c1,
            "c2": c2,
            "c3": c3,
            "style_outputs": torch.stack(outputs, dim=1),
            "codes_raw": codes_raw,
            "codes": codes,
        }

    def forward(self, x: Float[Tensor, "B 3 256 256"]) -> Float[Tensor, "B n_styles 512"]:
        return self.forward_features(x)["codes"]


def _check_encoder_type(opts: object, path: Union[str, Path]) -> None:
    if isinstance(opts, dict):
        kind = opts.get("encoder_type")
        if kind is not None and kind != "Encoder4Editing":
            raise WeightsFileError(
                f"encoder file '{path}' holds a '{kind}' encoder; only e4e (encoder_type 'Encoder4Editing') is "
                f"supported. Pass an e4e checkpoint with {ENCODER_FLAG}, or leave it out to invert by optimisation."
            )


def load_encoder(path: Union[str, Path]) -> Encoder4Editing:
    """Load an e4e checkpoint (`{'state_dict': {encoder.*, decoder.*}, 'opts': dict, 'latent_avg': [n,512]}`).

    The number of W+ rows is inferred from the `encoder.styles.*` keys (so e4e models for 256/512 generators load
    too), the body depth from the unit count, and each style block's depth from its conv keys. `decoder.*`
    (the bundled generator) is ignored. A bare dict of `encoder.*` tensors (+ optional `latent_avg`) also loads.
    Returns the encoder in eval mode with frozen weights.
    """
    obj = read_weights_file(path, "e4e encoder", ENCODER_FLAG)
    if not isinstance(obj, dict):
        raise WeightsFileError(
            f"encoder file '{path}' is a {type(obj).__name__}, expected an e4e checkpoint dict "
            f"{{'state_dict': {{'encoder.*': ...}}, 'latent_avg': ...}}. Pass it with {ENCODER_FLAG}."
        )
    _check_encoder_type(obj.get("opts"), path)
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    state = strip_prefix(sd, "encoder.")
    if not state or "styles.0.linear.weight" not in state:
        raise WeightsFileError(
            f"encoder file '{path}' has no e4e encoder weights: expected keys 'encoder.input_layer.0.weight', "
            f"'encoder.body.N.*', 'encoder.styles.N.*', 'encoder.latlayer1.*' inside ckpt['state_dict'] "
            f"(found e.g. {list(sd)[:4]}). Pass an e4e checkpoint with {ENCODER_FLAG}."
        )
    style_ids = sorted({int(k.split(".")[1]) for k in state if k.startswith("styles.")})
    n_styles = len(style_ids)
    if style_ids != list(range(n_styles)):
        raise WeightsFileError(f"encoder file '{path}': style blocks are not numbered 0..N-1 ({style_ids})")
    spatials = []
    for i in style_ids:
        convs = [k for k in state if re.fullmatch(rf"styles\.{i}\.convs\.\d+\.weight", k)]
        spatials.append(2 ** len(convs))
    units = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    try:
        num_layers = num_layers_from_units(len(units))
    except ValueError as err:
        raise WeightsFileError(f"encoder file '{path}': {err}") from None
    use_se = "body.0.res_layer.5.fc1.weight" in state

    latent_avg = obj.get("latent_avg") if "state_dict" in obj else sd.get("latent_avg")
    if latent_avg is None:
        raise WeightsFileError(
            f"encoder file '{path}' has no 'latent_avg' (the e4e codes are offsets from it). Re-export the "
            f"checkpoint with ckpt['latent_avg'] ([{n_styles},512] or [512])."
        )
    latent_avg = latent_avg.float()
    if latent_avg.dim() == 1:
        latent_avg = latent_avg[None].expand(n_styles, -1)
    if tuple(latent_avg.shape) != (n_styles, 512):
        raise WeightsFileError(
            f"encoder file '{path}': latent_avg has shape {tuple(latent_avg.shape)}, expected [{n_styles},512] or [512]"
        )
    state = {k: v for k, v in state.items() if k != "latent_avg"}
    state["latent_avg"] = latent_avg.contiguous()
    with torch.device("meta"):
        enc = Encoder4Editing(n_styles=n_styles, num_layers=num_layers, use_se=use_se, spatials=spatials)
    load_exact_state(enc, state, "e4e encoder", path)
    enc.eval()
    enc.requires_grad_(False)
    return enc


# ---------------------------------------------------------------------------------------------------------------
# Refinement MLP (paper Sec. 3.2)
# ---------------------------------------------------------------------------------------------------------------


class RefinementMLP(nn.Module):
    """Residual MLP on W+ codes: ws' = ws + MLP(ws), applied to each row with shared weights plus a learned
    per-row embedding. The last layer starts at zero, so a fresh refiner is the identity map.

    Args:
        w_dim: latent width (512 for FFHQ).
        num_ws: number of W+ rows (for the per-row embedding).
        hidden_dim: width of the hidden layers.
        num_layers: number of linear layers (>= 2).
    """

    def __init__(self, w_dim: int = 512, num_ws: int = 18, hidden_dim: int = 512, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError("RefinementMLP needs at least 2 layers")
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.row_embedding = nn.Parameter(torch.zeros(num_ws, w_dim))
        layers: List[nn.Module] = []
        dims = [w_dim] + [hidden_dim] * (num_layers - 1)
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        last = nn.Linear(dims[-1], w_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, ws: Float[Tensor, "B num_ws w_dim"]) -> Float[Tensor, "B num_ws w_dim"]:
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"RefinementMLP expects ws [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        return ws + self.net(ws + self.row_embedding[None])


def refine_inversion(
    encoder: nn.Module,
    refiner: RefinementMLP,
    generator: nn.Module,
    image: Float[Tensor, "1 3 H W"],
    steps: int = 200,
    lr: float = 1e-3,
    perceptual: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    identity: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    pixel_weight: float = 1.0,
    perceptual_weight: float = 0.8,
    identity_weight: float = 0.1,
    loss_size: int = 256,
) -> Float[Tensor, "1 num_ws w_dim"]:
    """Fit the refinement MLP to one image (Sec. 3.2) and return the refined W+ code.

    The encoder gives ws0 = E(image) once (frozen); the refiner is trained so that G(refiner(ws0)) matches the
    image under pixel (MSE) + perceptual (+ identity) loss, compared at `loss_size` (or the generator size if
    smaller). `perceptual` / `identity` are optional callables `(pred, target) -> scalar`.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W] in [-1, 1], got {tuple(image.shape)}")
    device = image.device
    with torch.no_grad():
        ws0 = encoder(resize_square(image, 256)).detach()
    size = min(loss_size, int(getattr(generator, "resolution", image.shape[-1])))
    target = resize_square(image, size).detach()
    refiner.train()
    opt = torch.optim.Adam(refiner.parameters(), lr=lr)
    for _ in range(steps):
        ws = refiner(ws0)
        pred = resize_square(generator.synthesis(ws, noise_mode="const"), size)
        loss = pixel_weight * pixel_loss(pred, target)
        if perceptual is not None:
            loss = loss + perceptual_weight * perceptual(pred, target)
        if identity is not None:
            loss = loss + identity_weight * identity(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    refiner.eval()
    with torch.no_grad():
        return refiner(ws0).detach().to(device)


__all__ = [
    "Encoder4Editing",
    "GradualStyleBlock",
    "EqualLinear",
    "RefinementMLP",
    "load_encoder",
    "refine_inversion",
    "ENCODER_FLAG",
]
