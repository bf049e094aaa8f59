"""Compute the metrics of one edit into a :mod:`nerfeditor_ns.eval.schema` report, from renders the caller made.

Both writers use :func:`fill_metrics`: the edit's outputs step (``metrics.json``: it passes the renders it has
anyway, and no Inception network) and ``ns-edit eval`` (``eval.json``: it renders everything at the edit's render
scale). Every metric is computed when its inputs and network are given and switched off with a one-line note
otherwise. Images are float [N, H, W, 3] in [0, 1]; face crops [N, 3, R, R] in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.eval import image_quality as iq
from nerfeditor_ns.eval.schema import entry, off


@dataclass
class ViewPair:
    """The same views seen by the original run (alpha 0) and by the edited run (alpha 1)."""

    original: Float[Tensor, "N *shape"]
    edited: Float[Tensor, "N *shape"]

    def __post_init__(self) -> None:
        if self.original.shape != self.edited.shape:
            raise ValueError(f"ViewPair: original {tuple(self.original.shape)} and edited {tuple(self.edited.shape)} "
                             "differ in shape.")


@dataclass
class EvalInputs:
    """Everything rendered for the metrics (None = not available: the metrics that need it are off)."""

    guide_views: Optional[ViewPair] = None
    """Original / edited renders at the guide cameras (V_in, then V_out)."""
    guides: Optional[Tensor] = None
    """The guide images at those cameras."""
    masks: Optional[Tensor] = None
    """The guide masks [N,H,W,1] (foreground = the edited region)."""
    num_in_domain: int = 0
    """How many of the guide views are in-domain (the first ones)."""
    crops_frontal: Optional[ViewPair] = None
    """Face crops of the frontal view (original / edited)."""
    crops_in_domain: Optional[ViewPair] = None
    """Face crops of the in-domain views V_in (original / edited)."""
    path: Optional[ViewPair] = None
    """Frames of a camera path in order (original / edited), for the CLIP directional metrics."""
    training: Optional[ViewPair] = None
    """Original / edited (alpha 1) renders at the training cameras, for KID."""
    training_alpha0: Optional[Tensor] = None
    """The edited run at alpha 0 at the reconstruction cameras."""
    training_alpha0_before: Optional[Tensor] = None
    """The original run at the reconstruction cameras."""
    recon_capture: Optional[Tensor] = None
    """The captured images at the reconstruction cameras."""
    capture: Optional[Tensor] = None
    """The captured images at the training cameras (KID's real set)."""
    prompt: Optional[str] = None
    """The edit's prompt (prompt edits)."""
    source_caption: str = "a photo of a person"
    """Caption of the original scene (CLIP direction similarity)."""
    target_caption: Optional[str] = None
    """Caption of the edited scene (default: the prompt)."""
    guide_c2w: Optional[Tensor] = None
    """Camera-to-world matrices [N,3,4] of the guide views (the order of ``guide_views``), for the pose error."""
    frontal_view: Optional[ViewPair] = None
    """Full renders [1,H,W,3] of the frontal camera (original / edited): the pose error's reference view."""
    frontal_c2w: Optional[Tensor] = None
    """Camera-to-world matrix [3,4] of the frontal camera."""
    faces: Optional[Any] = None
    """The face models (``nerfeditor_ns.mediapipe_models`` or an object with the same ``face_scores`` and
    ``face_landmarks``); None: the module itself when mediapipe is installed."""


@dataclass
class EvalNetworks:
    """The networks the metrics use; None = not given (``missing`` says which flag would give it)."""

    lpips: Optional[Callable[[Tensor, Tensor], Tensor]] = None
    """Spatial LPIPS-VGG ([-1,1] image pairs -> [B,1,H,W] maps)."""
    arcface: Optional[Callable[[Tensor], Tensor]] = None
    """ArcFace ([B,3,112,112] in [-1,1] -> [B,512])."""
    clip_image: Optional[Callable[[Tensor], Tensor]] = None
    """CLIP image embedding ([N,H,W,3] in [0,1] -> [N,E])."""
    clip_text: Optional[Callable[[str], Tensor]] = None
    """CLIP text embedding (str -> [E])."""
    inception: Optional[Callable[[Tensor], Tensor]] = None
    """InceptionV3 pool features (uint8 [B,3,H,W] -> [B,2048])."""
    missing: Dict[str, str] = field(default_factory=dict)
    """Why a network is None, by name (``lpips``, ``arcface``, ``clip``, ``inception``), e.g. "no --vgg"."""

    def why(self, name: str, default: str) -> str:
        return self.missing.get(name, default)


def _split(per_view: Tensor, n_in: int) -> Dict[str, Any]:
    out = iq.summary(per_view)
    if 0 < n_in < per_view.numel():
        out["in_domain"] = iq.summary(per_view[:n_in])["value"]
        out["out_of_domain"] = iq.summary(per_view[n_in:])["value"]
    return out


def _image_quality(metrics: Dict[str, Any], x: EvalInputs, nets: EvalNetworks) -> None:
    pair, guides, masks = x.guide_views, x.guides, x.masks
    keys = ("psnr", "ssim", "lpips")
    if pair is None or masks is None:
        for k in keys:
            metrics[f"{k}_outside_mask"] = off(f"{k}_outside_mask", f"{k}_outside_mask: no renders with guide masks.")
            metrics[f"{k}_inside_mask"] = off(f"{k}_inside_mask", f"{k}_inside_mask: no renders with guide masks.")
        metrics["l1_inside_mask"] = off("l1_inside_mask", "l1_inside_mask: no renders with guide masks.")
        return
    outside = 1.0 - iq.region_of(masks, pair.edited)
    inside = iq.region_of(masks, pair.edited)
    n_in = x.num_in_domain
    metrics["psnr_outside_mask"] = entry("psnr_outside_mask", **_split(iq.region_psnr(pair.edited, pair.original,
                                                                                      outside), n_in))
    metrics["ssim_outside_mask"] = entry("ssim_outside_mask", **_split(iq.region_ssim(pair.edited, pair.original,
                                                                                      outside), n_in))
    have_guides = guides is not None and guides.shape == pair.edited.shape
    if have_guides:
        metrics["psnr_inside_mask"] = entry("psnr_inside_mask", **_split(iq.region_psnr(pair.edited, guides, inside),
                                                                         n_in))
        metrics["ssim_inside_mask"] = entry("ssim_inside_mask", **_split(iq.region_ssim(pair.edited, guides, inside),
                                                                         n_in))
        err = (pair.edited.float().cpu() - guides.float().cpu()).abs()
        metrics["l1_inside_mask"] = entry("l1_inside_mask", **_split(iq.region_mean(err, inside), n_in))
    else:
        for k in ("psnr", "ssim", "lpips", "l1"):
            metrics[f"{k}_inside_mask"] = off(f"{k}_inside_mask", f"{k}_inside_mask: no guide images.")
    if nets.lpips is None:
        why = nets.why("lpips", "no --vgg")
        metrics["lpips_outside_mask"] = off("lpips_outside_mask", f"lpips_outside_mask: {why}.")
        metrics["lpips_inside_mask"] = off("lpips_inside_mask", f"lpips_inside_mask: {why}.")
        return
    metrics["lpips_outside_mask"] = entry("lpips_outside_mask", **_split(
        iq.region_lpips(nets.lpips, pair.edited, pair.original, outside), n_in))
    if have_guides:
        metrics["lpips_inside_mask"] = entry("lpips_inside_mask", **_split(
            iq.region_lpips(nets.lpips, pair.edited, guides, inside), n_in))


def _identity(metrics: Dict[str, Any], x: EvalInputs, nets: EvalNetworks) -> None:
    from nerfeditor_ns.eval.metrics import identity_cosines

    for key, crops in (("id_frontal", x.crops_frontal), ("id_in_domain", x.crops_in_domain)):
        if nets.arcface is None:
            metrics[key] = off(key, f"{key}: {nets.why('arcface', 'no --arcface')}.")
        elif crops is None:
            metrics[key] = off(key, f"{key}: no face crops of these views.")
        else:
            cos = identity_cosines(nets.arcface, crops.original, crops.edited)
            metrics[key] = entry(key, float(cos.mean()), views=int(cos.numel()), per_view=[float(c) for c in cos])


def _clip(metrics: Dict[str, Any], x: EvalInputs, nets: EvalNetworks) -> None:
    from nerfeditor_ns.eval import clip_direction as cd

    keys = ("clip_text_similarity", "clip_direction_similarity", "clip_direction_consistency")
    if nets.clip_image is None or nets.clip_text is None:
        for key in keys:
            metrics[key] = off(key, f"{key}: {nets.why('clip', 'no --clip')}.")
        return
    target = x.target_caption or x.prompt
    if x.prompt and x.crops_frontal is not None:
        text = nets.clip_text(x.prompt).reshape(1, -1)
        edited = float(F.cosine_similarity(nets.clip_image(_crops_as_images(x.crops_frontal.edited)), text).mean())
        original = float(F.cosine_similarity(nets.clip_image(_crops_as_images(x.crops_frontal.original)), text).mean())
        metrics["clip_text_similarity"] = entry("clip_text_similarity", edited, prompt=x.prompt, original=original,
                                                gain=edited - original)
    else:
        metrics["clip_text_similarity"] = off("clip_text_similarity",
                                              "clip_text_similarity: prompt edits only (needs --prompt).")
    if x.path is None or x.path.original.shape[0] < 2:
        for key in keys[1:]:
            metrics[key] = off(key, f"{key}: no camera path of at least 2 frames was rendered.")
        return
    emb_o, emb_e = nets.clip_image(x.path.original), nets.clip_image(x.path.edited)
    frames = int(emb_o.shape[0])
    if target:
        sim = cd.text_image_direction_similarity(emb_o, emb_e, nets.clip_text(x.source_caption),
                                                 nets.clip_text(target))
        metrics["clip_direction_similarity"] = entry(
            "clip_direction_similarity", float(sim.mean()), views=frames, per_view=[float(v) for v in sim],
            source_caption=x.source_caption, target_caption=target)
    else:
        metrics["clip_direction_similarity"] = off(
            "clip_direction_similarity", "clip_direction_similarity: needs a caption of the edit (prompt edits, or "
            "--target-caption).")
    cons = cd.direction_consistency(emb_o, emb_e)
    metrics["clip_direction_consistency"] = entry("clip_direction_consistency", float(cons.mean()), views=frames,
                                                  pairs=int(cons.numel()), per_pair=[float(v) for v in cons])


def _crops_as_images(crops: Float[Tensor, "N 3 R R"]) -> Float[Tensor, "N R R 3"]:
    """[-1, 1] face crops as [0, 1] images."""
    return ((crops.float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def _kid(metrics: Dict[str, Any], x: EvalInputs, nets: EvalNetworks) -> None:
    from nerfeditor_ns.eval.kid import inception_features, kernel_inception_distance

    if nets.inception is None:
        why = nets.why("inception", "no --inception")
        metrics["kid_before"] = off("kid_before", f"kid_before: {why}.")
        metrics["kid_after"] = off("kid_after", f"kid_after: {why}.")
        return
    if x.training is None or x.capture is None:
        for key in ("kid_before", "kid_after"):
            metrics[key] = off(key, f"{key}: no renders at the training cameras.")
        return
    real = inception_features(nets.inception, x.capture)
    n = int(real.shape[0])
    metrics["kid_before"] = entry("kid_before", kernel_inception_distance(
        real, inception_features(nets.inception, x.training.original)), views=n)
    metrics["kid_after"] = entry("kid_after", kernel_inception_distance(
        real, inception_features(nets.inception, x.training.edited)), views=n)


def _reconstruction(metrics: Dict[str, Any], x: EvalInputs) -> None:
    if x.training_alpha0 is None or x.recon_capture is None:
        for key in ("reconstruction_psnr", "reconstruction_psnr_before"):
            metrics[key] = off(key, f"{key}: no alpha = 0 renders of the training views.")
        return
    metrics["reconstruction_psnr"] = entry("reconstruction_psnr",
                                           **iq.summary(iq.region_psnr(x.training_alpha0, x.recon_capture)))
    if x.training_alpha0_before is not None:
        metrics["reconstruction_psnr_before"] = entry(
            "reconstruction_psnr_before", **iq.summary(iq.region_psnr(x.training_alpha0_before, x.recon_capture)))
    else:
        metrics["reconstruction_psnr_before"] = off("reconstruction_psnr_before",
                                                    "reconstruction_psnr_before: no original renders.")


FACES_NOTE = 'needs the face models of the `faces` extra (pip install "nerfeditor-ns[faces]": mediapipe)'


def _faces(metrics: Dict[str, Any], x: EvalInputs) -> None:
    """FR, Pose error and APS (:func:`_face_metrics`); a failure of the optional face models switches them off with
    its message instead of failing the edit's last step."""
    try:
        _face_metrics(metrics, x)
    except Exception as err:  # mediapipe is an optional extra: its errors must not cost a finished edit
        for key in ("fr_before", "fr_after", "pose_error", "aps"):
            metrics[key] = off(key, f"{key}: the face models failed ({type(err).__name__}: {err}).")


def _face_metrics(metrics: Dict[str, Any], x: EvalInputs) -> None:
    """FR (face detection confidence), Pose error and APS (face landmarks) over the guide views
    (:mod:`nerfeditor_ns.eval.face_metrics`)."""
    from nerfeditor_ns import mediapipe_models
    from nerfeditor_ns.eval import face_metrics as fm

    keys = ("fr_before", "fr_after", "pose_error", "aps")
    models = x.faces
    if models is None and mediapipe_models.available():
        models = mediapipe_models
    if models is None:
        for key in keys:
            metrics[key] = off(key, f"{key}: {FACES_NOTE}.")
        return
    if x.guide_views is None:
        for key in keys:
            metrics[key] = off(key, f"{key}: no renders of the guide views.")
        return
    n_in = x.num_in_domain
    for key, images in (("fr_before", x.guide_views.original), ("fr_after", x.guide_views.edited)):
        scores = models.face_scores(images)
        metrics[key] = entry(key, **_split(scores, n_in))
    original = models.face_landmarks(x.guide_views.original)
    edited = models.face_landmarks(x.guide_views.edited)
    aps = fm.attribute_preservation(original, edited)
    metrics["aps"] = (entry("aps", aps["value"], views=aps["views"], per_view_nme=aps["per_view_nme"])
                      if aps["views"] else off("aps", "aps: no guide view where a face was found in both renders."))
    if x.frontal_view is None or x.frontal_c2w is None or x.guide_c2w is None:
        metrics["pose_error"] = off("pose_error", "pose_error: no frontal render or guide cameras.")
        return
    frontal = models.face_landmarks(x.frontal_view.edited)[0]
    frontal_before = models.face_landmarks(x.frontal_view.original)[0]
    if frontal is None:
        metrics["pose_error"] = off("pose_error", "pose_error: no face found in the edited frontal view.")
        return
    pose = fm.pose_errors(edited, x.guide_c2w, frontal, x.frontal_c2w)
    before = (fm.pose_errors(original, x.guide_c2w, frontal_before, x.frontal_c2w)["value"]
              if frontal_before is not None else None)
    if pose["value"] is None:
        metrics["pose_error"] = off("pose_error", "pose_error: no face found in the edited guide views.")
        return
    metrics["pose_error"] = entry("pose_error", pose["value"], views=pose["views"], per_view=pose["per_view"],
                                  yaw_error=pose["yaw_error"], pitch_error=pose["pitch_error"], original=before)


def fill_metrics(report: Dict[str, Any], x: EvalInputs, nets: EvalNetworks) -> Dict[str, Any]:
    """Compute every metric of the schema into ``report["metrics"]`` (those lacking inputs or networks off)."""
    metrics = report["metrics"]
    _image_quality(metrics, x, nets)
    _identity(metrics, x, nets)
    _clip(metrics, x, nets)
    _kid(metrics, x, nets)
    _reconstruction(metrics, x)
    _faces(metrics, x)
    return report
