"""A tiny "art" StyleGAN2 for the 3D style transfer tests, made from the shipped 32 px face generator.

Art StyleGANs (WikiArt, MetFaces) keep the layout in the hidden maps of the early blocks and put the painting's
colour in the last style rows: that is what ``--style-image`` relies on (App. D: mapped to a deep block, "the output
images almost only share color information of the given style image"). The generator here has exactly that
property, strongly and by construction, so a test can tell whether an edit took the painting's colours:

- three channels of the last 3x3 conv are made constant (zero weights, bias ``BETA``), whatever the hidden map;
- the last ToRGB turns them into an additive colour cast that is linear in the LAST W+ row:
  ``cast_c(w) = CAST_STD * p_c . (w - w_avg) / std_c`` (``p_c`` fixed random directions, ``std_c`` their spread
  over the generator's own codes), so a painting's code carries its cast and the subject's code its own colours.

Everything else is the face generator's, so the art generator's samples keep its faces' layout (luminance-gradient
correlation 0.99 with the face generator at the same code). Made analytically in well under a second: no training,
no data file. (Finetuning on colour-cast images would give a similar generator, but slower and less exactly.)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tests.helpers.tiny_runs import ROOT

FACE_G = ROOT / "tests" / "data" / "face_gan32.pt"
CAST_STD = 0.5
"""Spread (in [-1, 1] image units) of each colour channel's cast over the generator's own codes."""
BETA = 1.0
"""Bias of the constant channels."""


def make_art_generator(path: Path, seed: int = 1):
    """Write the art generator (rosinality ``.pt``, the format of the face generator) to ``path``; returns it."""
    from nerfeditor_ns.gan.checkpoints import load_generator, save_rosinality_checkpoint

    G = load_generator(FACE_G)
    t = len(G.torgbs) - 1
    conv, rgb = G.layers[2 * t], G.torgbs[t]  # the last block's second conv and its ToRGB (row 2t + 1 = last)
    rng = torch.Generator().manual_seed(seed)
    directions = torch.randn(3, G.w_dim, generator=rng)
    with torch.no_grad():
        w = G.mapping(torch.randn(1024, G.z_dim, generator=rng))[:, -1]
        spread = ((w - G.w_avg) @ directions.T).std(dim=0)
        scale = 1.0 / math.sqrt(G.w_dim)  # the affine's equalised-learning-rate factor
        for c in range(3):  # channel c of the conv -> colour channel c of the image
            conv.weight[c] = 0.0
            conv.bias[c] = BETA
            rgb.weight[:, c] = 0.0
            # ToRGB: y_c = weight/sqrt(C) * style * x, x = sqrt(2) * BETA (bias + leaky ReLU gain)
            rgb.weight[c, c] = CAST_STD * math.sqrt(rgb.weight.shape[1]) / (math.sqrt(2.0) * BETA)
            rgb.affine_weight[c] = directions[c] / spread[c] / scale
            rgb.affine_bias[c] = -float(G.w_avg @ directions[c]) / spread[c]
    save_rosinality_checkpoint(G, path, latent_avg=G.w_avg.clone())
    return G


def make_painting(generator, path: Path, seed: int = 7, candidates: int = 256) -> torch.Tensor:
    """A "painting" of the art generator: among ``candidates`` of its samples, the one with the strongest blue cast
    (blue minus red); saved as a PNG at the generator's resolution. Returns it as [1, 3, R, R] in [-1, 1]."""
    from nerfeditor_ns.edit.steps_scene import save_image

    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = generator.mapping(torch.randn(candidates, generator.z_dim, generator=rng))
        cast = ws[:, -1] - generator.w_avg
        rgb = generator.torgbs[-1]
        styles = cast @ (rgb.affine_weight[:3] / math.sqrt(generator.w_dim)).T  # the cast's three styles
        best = int(torch.argmax(styles[:, 2] - styles[:, 0]))
        image = generator.synthesis(ws[best : best + 1], noise_mode="const").clamp(-1, 1)
    save_image(image, path)
    return image
