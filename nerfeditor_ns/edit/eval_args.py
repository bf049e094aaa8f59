"""The command-line arguments of ``ns-edit eval`` (a tyro dataclass, one docstring per field).

Standard library only: ``ns-edit eval --help`` parses these without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

DEFAULT_SOURCE_CAPTION = "a photo of a person"


@dataclass(kw_only=True)
class EvalArgs:
    """Evaluate a finished edit (paper Tabs. 2, 3, 5): render the edited run at alpha 1 and its original run at
    alpha 0 (named in the edited run's edit.json), compute PSNR / SSIM / LPIPS outside and inside the guide masks, the
    ID score, the CLIP directional metrics and KID before/after, write eval.json into the edited run (the layout of
    metrics.json, schema nerfeditor-metrics/2) and print a table. A metric whose network is not given is switched off
    with a note; nothing is downloaded. Network paths may also come from NERFEDITOR_* environment variables or
    ~/.config/nerfeditor/networks.yml, as for ns-edit."""

    load_config: Path
    """config.yml of the EDITED run (the run ns-edit wrote; its edit.json names the original run)."""

    vgg: Optional[Path] = None
    """torchvision VGG16 state dict (vgg16-397923af.pth): the trunk of LPIPS-VGG; LPIPS is off without it.
    Env: NERFEDITOR_VGG."""
    arcface: Optional[Path] = None
    """ArcFace IR-SE50 weights (model_ir_se50.pth) for the ID score; off without it. Env: NERFEDITOR_ARCFACE."""
    clip: Optional[Path] = None
    """open_clip checkpoint file for the CLIP metrics; off without it. Env: NERFEDITOR_CLIP."""
    clip_model: Optional[str] = None
    """open_clip architecture name of the --clip file (default ViT-B-32). Env: NERFEDITOR_CLIP_MODEL."""
    inception: Optional[Path] = None
    """torch-fidelity's InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth) for KID; off without it.
    Env: NERFEDITOR_INCEPTION."""
    network_config: Optional[Path] = None
    """YAML file with network paths (default $NERFEDITOR_CONFIG or ~/.config/nerfeditor/networks.yml)."""

    source_caption: str = DEFAULT_SOURCE_CAPTION
    """Caption of the original scene for the CLIP text-image direction similarity."""
    target_caption: Optional[str] = None
    """Caption of the edited scene (default: the edit's --prompt; without a prompt or this flag the text-image
    direction similarity is off, the direction consistency is still computed)."""
    path_frames: int = 24
    """Frames of the camera path for the CLIP metrics (the turntable arc of the edit's video: frontal -> captured
    yaw range there and back)."""
    render_scale: Optional[float] = None
    """Resolution of the frontal view, the camera path and the training views relative to the training images
    (default: the edit's --render-scale). The guide views are rendered at the guide images' own size."""
    max_training_views: Optional[int] = None
    """Use at most this many training cameras (evenly spaced) for KID, the reconstruction PSNR and the fidelity
    block (default: all)."""
    render_chunk: int = 4096
    """Rays per forward pass when rendering (lower it if out of memory)."""
    output: Optional[Path] = None
    """Where to write the report (default: eval.json in the edited run)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the metric networks (the runs follow their own machine config when 'auto')."""
