"""ArcFace IR-SE50 face-recognition backbone (identity features for the identity loss, Eq. 1 / Sec. 3.2).

Same network and key layout as `model_ir_se50.pth` (the backbone of the pSp/e4e identity loss,
encoder4editing `models/encoders/model_irse.Backbone(112, 50, 'ir_se', drop_ratio=0.6, affine=True)`):
stem, IR-SE50 body, output layer BN2d -> Dropout -> Flatten -> Linear(512*7*7, 512) -> BN1d, then L2
normalisation without epsilon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch
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
)

ARCFACE_FLAG = "--arcface"  # the ns-edit option (or $NERFEDITOR_ARCFACE)


class Flatten(nn.Module):
    """[B, C, H, W] -> [B, C*H*W] (a module so that `output_layer` indices match the checkpoint)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class IRSE50Backbone(nn.Module):
    """ArcFace IR-SE backbone: `A(img [B,3,S,S] in [-1,1]) -> [B,512]` unit-norm embeddings (S = 112 or 224)."""

    def __init__(self, input_size: int = 112, num_layers: int = 50, use_se: bool = True, drop_ratio: float = 0.6,
                 affine: bool = True) -> None:
        super().__init__()
        if input_size not in (112, 224):
            raise ValueError(f"input_size must be 112 or 224, got {input_size}")
        self.input_size = input_size
        spatial = 7 if input_size == 112 else 14
        self.input_layer = make_input_layer()
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            Flatten(),
            nn.Linear(512 * spatial * spatial, 512),
            nn.BatchNorm1d(512, affine=affine),
        )
        self.body = make_body(num_layers, use_se)

    def forward_features(self, x: Float[Tensor, "B 3 S S"]) -> Dict[str, Tensor]:
        """All stages: `body_out` [B,512,S/16,S/16], `features_prenorm` [B,512], `embedding` [B,512]."""
        check_image_batch(x, "ArcFace")
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"ArcFace expects {self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}; "
                "crop/resize first (IdentityLoss does this for 256-px face images)"
            )
        body_out = self.body(self.input_layer(x))
        pre = self.output_layer(body_out)
        emb = pre / torch.norm(pre, p=2, dim=1, keepdim=True)  # l2_norm without epsilon, as the reference
        return {"body_out": body_out, "features_prenorm": pre, "embedding": emb}

    def forward(self, x: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B 512"]:
        return self.forward_features(x)["embedding"]


def load_arcface(path: Union[str, Path]) -> IRSE50Backbone:
    """Load an ArcFace IR-SE checkpoint (`model_ir_se50.pth` state dict) in eval mode, frozen.

    Depth (50/100/152), SE or plain IR units, and input size (112/224) are inferred from the weights. A
    `module.` prefix (DataParallel) or a `{'state_dict': ...}` wrapper is accepted.
    """
    obj = read_weights_file(path, "ArcFace IR-SE50", ARCFACE_FLAG)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsFileError(
            f"ArcFace file '{path}' is not a state dict of tensors (expected the model_ir_se50.pth layout: "
            f"'input_layer.0.weight', 'body.N.res_layer.*', 'output_layer.3.weight', ...). Pass it with {ARCFACE_FLAG}."
        )
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}
    needed = ("input_layer.0.weight", "output_layer.3.weight", "body.0.res_layer.1.weight")
    if not all(k in state for k in needed):
        raise WeightsFileError(
            f"ArcFace file '{path}' does not look like an IR-SE backbone: expected keys {list(needed)} "
            f"(model_ir_se50.pth layout), found e.g. {list(state)[:4]}. Pass the ArcFace file with {ARCFACE_FLAG}."
        )
    units = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    num_layers = num_layers_from_units(len(units))
    use_se = "body.0.res_layer.5.fc1.weight" in state
    input_size = 112 if state["output_layer.3.weight"].shape[1] == 512 * 7 * 7 else 224
    affine = "output_layer.4.weight" in state
    with torch.device("meta"):
        net = IRSE50Backbone(input_size=input_size, num_layers=num_layers, use_se=use_se, affine=affine)
    load_exact_state(net, state, "ArcFace IR-SE50", path)
    net.eval()
    net.requires_grad_(False)
    return net


__all__ = ["IRSE50Backbone", "load_arcface", "ARCFACE_FLAG"]
