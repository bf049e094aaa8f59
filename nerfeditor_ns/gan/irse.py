"""IR-SE50 building blocks shared by the e4e encoder and the ArcFace identity network.

Both networks (encoder4editing `models/encoders/model_irse.py` / `helpers.py` layouts) are a stack of improved
residual units with squeeze-excitation ("IR-SE"): an input stem conv-BN-PReLU at full resolution, then four stages
of 3/4/14/3 units (IR-50) whose first unit downsamples by 2. The state-dict key layout of these modules matches
the published checkpoints (`model_ir_se50.pth`, `e4e_ffhq_encode.pt`) so they load without renaming.

Also holds the restricted checkpoint reader and the key check used by both loaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, NamedTuple, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.weights_io import WeightsFileError, read_weights_file  # re-exported for the loaders


class UnitSpec(NamedTuple):
    """One residual unit: input channels, output channels, stride of its second conv."""

    in_channel: int
    depth: int
    stride: int


def _stage(in_channel: int, depth: int, num_units: int, stride: int = 2) -> List[UnitSpec]:
    return [UnitSpec(in_channel, depth, stride)] + [UnitSpec(depth, depth, 1) for _ in range(num_units - 1)]


# Units per stage for the IR-50/100/152 bodies (model_irse.get_blocks).
STAGE_UNITS: Dict[int, Tuple[int, int, int, int]] = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


def body_specs(num_layers: int = 50) -> List[UnitSpec]:
    """The residual units of an IR-`num_layers` body, in order (channels 64 -> 64 -> 128 -> 256 -> 512)."""
    if num_layers not in STAGE_UNITS:
        raise ValueError(f"IR body depth must be one of {sorted(STAGE_UNITS)}, got {num_layers}")
    n = STAGE_UNITS[num_layers]
    return _stage(64, 64, n[0]) + _stage(64, 128, n[1]) + _stage(128, 256, n[2]) + _stage(256, 512, n[3])


def num_layers_from_units(num_units: int) -> int:
    """Inverse of `body_specs`: the IR depth whose body has `num_units` residual units."""
    for depth, units in STAGE_UNITS.items():
        if sum(units) == num_units:
            return depth
    raise ValueError(f"a body with {num_units} residual units is not an IR-50/100/152 network")


class SEModule(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))), 1x1 convs without bias."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * s


class BottleneckIR(nn.Module):
    """Improved residual unit (`bottleneck_IR` / `bottleneck_IR_SE`): BN-conv-PReLU-conv(stride)-BN[-SE] + shortcut.

    The shortcut is a strided identity (MaxPool2d(1, stride)) when the channel count is kept, else a strided
    1x1 conv + BN.
    """

    def __init__(self, in_channel: int, depth: int, stride: int, use_se: bool = True) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: List[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if use_se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def make_input_layer() -> nn.Sequential:
    """Stem: 3x3 conv (3 -> 64, no bias), BatchNorm, PReLU; keeps the resolution."""
    return nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))


def make_body(num_layers: int = 50, use_se: bool = True) -> nn.Sequential:
    """The residual body: 4 stages, each halving the resolution (256 -> 16, 112 -> 7)."""
    return nn.Sequential(*[BottleneckIR(s.in_channel, s.depth, s.stride, use_se) for s in body_specs(num_layers)])


# ---------------------------------------------------------------------------------------------------------------
# State-dict helpers shared by the loaders (files are read by nerfeditor_ns.gan.weights_io)
# ---------------------------------------------------------------------------------------------------------------


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Entries whose key starts with `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_exact_state(
    module: nn.Module,
    state: Mapping[str, Tensor],
    what: str,
    path: Union[str, Path],
    optional_suffixes: Iterable[str] = ("num_batches_tracked",),
) -> None:
    """Load `state` into a module built on the meta device, checking keys and shapes with a readable error.

    Entries whose names end with one of `optional_suffixes` (BatchNorm counters) may be absent. Tensors are
    assigned (no copy), so a memory-mapped checkpoint is not duplicated.
    """
    expected = module.state_dict(keep_vars=True)
    optional = tuple(optional_suffixes)
    missing = [k for k in expected if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:4]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:4]})")
        if wrong:
            parts.append(f"shape mismatches: {wrong[:4]}")
        raise WeightsFileError(f"{what} file '{path}' does not match the expected layout: " + "; ".join(parts))
    full: Dict[str, Tensor] = {}
    for k, ref in expected.items():
        if k in state:
            v = state[k]
            if v.dtype != ref.dtype and v.is_floating_point():
                v = v.to(ref.dtype)
            full[k] = v
        else:  # optional counter
            full[k] = torch.zeros(ref.shape, dtype=ref.dtype)
    module.load_state_dict(full, assign=True)


def check_image_batch(x: Float[Tensor, "B 3 H W"], name: str) -> None:
    """Shape check for image batches entering the IR networks."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} expects images [B, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")


__all__ = [
    "SEModule",
    "BottleneckIR",
    "UnitSpec",
    "body_specs",
    "make_body",
    "make_input_layer",
    "num_layers_from_units",
    "read_weights_file",
    "load_exact_state",
    "strip_prefix",
    "WeightsFileError",
    "check_image_batch",
]

