"""NerfEditorModel: nerfacto with the conditional field and the 3D-consistent editing losses (paper Sec. 3.1, 3.4).

The model is nerfacto's (subclassed; only what differs is overridden): the field is the gated-residual
:class:`ConditionalNerfField`, which at alpha = 0 computes exactly nerfacto's field, so plain training (only original
rays, ``set_index == 0``) is nerfacto: RGB MSE + interlevel + distortion, average appearance at eval.

Finetuning with guide sets adds, per Eq. 6, ``L = (L_style + L_br + L_ori) + lambda * L_depth`` plus a small
penalty on the residual (our addition):

- RGB loss on the original rays only (they keep alpha = 0 and their own beta);
- L_style (Eq. 2): masked colour loss on the guide rays;
- L_br (Eq. 3): on guide rays, densities in the background (1 - M) held to the frozen original model's;
- L_ori (Eq. 4): on original rays, densities held to the frozen original model's (exactly 0 while the alpha = 0
  branch is frozen, ``freeze_original``; meaningful when it is not);
- L_depth (Eq. 5): smoothness of the CHANGE of depth against the frozen original, on the patch rays (the last
  ``P*S*S`` rays, when ``batch["patch_shape"]``): a null edit costs nothing, the original's own edges stay;
- residual penalty: mean squared gated residual pre-activations on every sample of the alpha > 0 rays, so that the
  edited scene stays the original wherever guides and masks do not ask for a change.

Chained edits (``prior_edit_regions``): the edited run's residual is frozen into the base (the field's
``prior_edits``), so the "original model" the new edit's L_br / L_ori / residual penalty hold it to is the earlier
edit's alpha = 1 scene; a fresh residual carries the new edit.

The frozen "original model" is a copy of the field taken by :meth:`NerfEditorModel.begin_finetune` (automatically at
the first training step when ``config.finetune``), which also freezes the alpha = 0 branch of the field itself
(``freeze_original``). Densities are compared at the same sample points: the frozen field is evaluated on the
current ray samples under ``no_grad`` for the original scene (alpha = 0).

Proposal networks stay nerfacto's (density only, not conditioned): they are a geometry prior that only has to
place samples near surfaces. Trained by the interlevel loss on every ray (original and guide), they learn the
envelope of all (alpha, beta) geometries, which is what the sampler needs; conditioning them would only add cost.

No network access: nerfacto builds torchmetrics' LPIPS, which downloads AlexNet weights. Here LPIPS is built only
when the AlexNet checkpoint is already in the torch hub cache; otherwise it is left out of the metrics with one
warning.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Type

import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.camera_optimizers import CameraOptimizer
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.field_components.spatial_distortions import SceneContraction
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig

from nerfeditor_ns.nerf import losses as edit_losses
from nerfeditor_ns.nerf.edit_region import EditRegion, decode_prior_regions
from nerfeditor_ns.nerf.fast_inference import use_fast_inference
from nerfeditor_ns.nerf.field import AVERAGE_APPEARANCE, RESIDUAL_BUFFERS, RESIDUAL_MODULES, ConditionalNerfField

ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"
"""File name torchvision gives the AlexNet ImageNet weights in ``<torch hub dir>/checkpoints`` (LPIPS backbone)."""

_LPIPS_WARNED = False


def local_alexnet_checkpoint() -> Optional[Path]:
    """Path of the cached AlexNet weights LPIPS needs, or None when they are not on this machine."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT
    return path if path.is_file() else None


def build_lpips_if_local() -> Optional[torch.nn.Module]:
    """torchmetrics LPIPS when its backbone is cached locally; else None and ONE warning (never downloads)."""
    global _LPIPS_WARNED
    path = local_alexnet_checkpoint()
    if path is None:
        if not _LPIPS_WARNED:
            _LPIPS_WARNED = True
            warnings.warn(
                f"LPIPS left out of the metrics: its AlexNet weights are not in the torch hub cache "
                f"({Path(torch.hub.get_dir()) / 'checkpoints' / ALEXNET_CHECKPOINT}). Copy that file there to "
                "enable it; nothing is downloaded.",
                stacklevel=2,
            )
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(normalize=True)


@contextlib.contextmanager
def _offline_lpips() -> Iterator[None]:
    """While nerfacto's ``populate_modules`` runs, its ``LearnedPerceptualImagePatchSimilarity(...)`` call gets
    :func:`build_lpips_if_local` instead (nerfacto imports the class inside that method, from this module)."""
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda *args, **kwargs: build_lpips_if_local()  # type: ignore
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]


class GuideAwareCameraOptimizer(CameraOptimizer):
    """nerfacto's pose refinement for rays of original cameras; guide cameras (index >= num_cameras) stay as given."""

    def apply_to_raybundle(self, raybundle: RayBundle) -> None:
        if self.config.mode == "off" or raybundle.camera_indices is None:
            return
        idx = raybundle.camera_indices.reshape(-1)
        valid = (idx >= 0) & (idx < self.num_cameras)
        if bool(valid.all()):
            super().apply_to_raybundle(raybundle)
            return
        if not bool(valid.any()):
            return
        correction = self(idx[valid])
        origins = raybundle.origins.clone()
        directions = raybundle.directions.clone()
        origins[valid] = origins[valid] + correction[:, :3, 3]
        directions[valid] = torch.bmm(correction[:, :3, :3], directions[valid][..., None])[..., 0]
        raybundle.origins = origins
        raybundle.directions = directions


@dataclass
class NerfEditorModelConfig(NerfactoModelConfig):
    """NerfEditor model config: nerfacto's options plus the conditional residual field and the editing losses.

    nerfacto's ``use_appearance_embedding`` / ``appearance_embed_dim`` configure the per-image appearance of the
    alpha = 0 branch (as in nerfacto); ``app_embed_dim`` is the size of E_app for the guide codes beta of the residual.
    """

    _target: Type = field(default_factory=lambda: NerfEditorModel)
    d_beta: int = 16
    """Dimension of the guide appearance code beta in [0,1]^d_beta (paper Sec. 3.4)."""
    style_embed_dim: int = 8
    """Output size of E_style(alpha)."""
    app_embed_dim: int = 16
    """Output size of E_app(beta) for the residual branch."""
    code_hidden_dim: int = 32
    """Hidden width of the E_style / E_app MLPs."""
    delta_hidden_dim: int = 64
    """Hidden width of the alpha-gated residual heads F_dens^D and F_color^D."""
    delta_num_layers: int = 2
    """Layers of each residual head (the last one starts at zero)."""
    num_layers: int = 2
    """Layers of the density head F_dens (nerfacto's)."""
    geo_feat_dim: int = 15
    """Size of the geometry feature f_geo passed from F_dens to F_color."""
    num_layers_color: int = 3
    """Layers of the colour head F_color (nerfacto's)."""
    style_loss_mult: float = 1.0
    """Weight of L_style, the masked colour loss on guide rays (Eq. 2)."""
    background_loss_mult: float = 0.01
    """Weight of L_br, background densities of guide rays held to the original model (Eq. 3). Densities (exp
    activation) are large near surfaces, so the squared density terms get 0.01 to sit at the scale of the colour
    terms (measured on the face scene: with 1.0 they outweigh L_style ~100x and the edit does not take)."""
    original_loss_mult: float = 0.01
    """Weight of L_ori, densities of original rays held to the original model (Eq. 4); scale as L_br. Exactly 0
    while ``freeze_original`` holds the alpha = 0 branch."""
    background_color_loss_mult: float = 1.0
    """Weight of a colour term on guide rays OUTSIDE the mask (1 - M): the guide images carry the original render
    there (exactly: guides add the edit's change only inside M), so the edited scene (alpha = 1) keeps the original
    background colour. Not in the paper, whose scenes have the background segmented away (App. E). Measured on the
    built-in demo: at 0.1 the colour residual left orange blotches and a warm tint (outside-ring PSNR min 16 dB); at
    1.0 the ring keeps 29 dB with the edit still visible. 0 = the paper's losses only."""
    depth_loss_mult: float = 0.1
    """lambda of Eq. 6: weight of the depth smoothness L_depth on patches (Eq. 5)."""
    delta_penalty_mult: float = 0.001
    """Weight of the penalty on the residual: mean squared gated pre-activations (density logit and colour logits)
    of the residual heads over every sample of the alpha > 0 rays. Keeps alpha = 1 equal to the original wherever
    guides and masks do not ask for a change. 0 disables."""
    edit_box: Optional[Tuple[float, ...]] = None
    """The 3D region an edit may change, written by ns-edit: the subject box as 13 numbers (centre 3, half-size 1,
    rotation 9 row by row; dataparser coordinates). The alpha-gated residual is multiplied by a soft indicator of this
    cube (nerf/edit_region.py), so the scene outside it stays the original exactly. None: no spatial gate."""
    edit_box_falloff: float = 0.25
    """Width of the shell outside ``edit_box`` over which the edit fades out, as a fraction of its half-size."""
    edit_box_bottom: float = 1.0
    """How far ``edit_box`` reaches below its centre along its up axis, in half-sizes (1 = the whole cube; ns-edit
    sets the chin's level for a face, so the clothes stay the original)."""
    freeze_original: bool = True
    """While finetuning, freeze the alpha = 0 branch of the field (hash grid, base heads, per-image appearance) and
    the proposal networks (which place the samples), so alpha = 0 renders exactly the original scene; alpha = 1 edits
    then use the original sampler (fine for appearance and moderate shape edits near the surface). False lets them
    move, the field held only by L_ori (Eq. 4) and the RGB loss."""
    finetune: bool = False
    """Finetuning run: at the first training step take a frozen copy of the field as the "original model"."""
    prior_edit_regions: Tuple[float, ...] = ()
    """Earlier edits frozen into the base of a chained run (written by ns-edit when it edits an edited run):
    ``nerf.edit_region.PRIOR_REGION_VALUES`` numbers per edit, oldest first (its edit_box, all 0 when it had none;
    its falloff; its bottom). Their residuals apply at alpha = 1 under every alpha, so alpha = 0 renders the latest
    earlier edit's result. A checkpoint with one edit fewer (the run being edited) is loaded with its residual moved
    into the base and a fresh residual for the new edit."""
    default_alpha: float = 0.0
    """Style alpha used for rays without alpha (eval, viewer, ns-render, ns-export) until the viewer slider moves it:
    0 = the original scene; runs written by ns-edit are saved with 1 (they open on the edit)."""


class NerfEditorModel(NerfactoModel):
    """Conditional nerfacto (paper Sec. 3.1) with the finetuning losses of Sec. 3.4."""

    config: NerfEditorModelConfig
    field: ConditionalNerfField
    field_original: Optional[ConditionalNerfField]

    # ------------------------------------------------------------------------------------------------ setup
    def populate_modules(self) -> None:
        """nerfacto's modules, then the conditional field in place of nerfacto's and the guide-aware camera
        optimizer; LPIPS only when its weights are local (nerfacto's own call would download them)."""
        if self.config.predict_normals:
            raise ValueError("nerfeditor's field does not predict normals: leave --pipeline.model.predict-normals off.")
        with _offline_lpips():
            super().populate_modules()
        nerfacto_field = self.field.state_dict()
        # the conditional field draws its own random init without moving the random stream nerfacto's training sees,
        # and its nerfacto part starts from nerfacto's own draws: with the same seed and sampling, training at
        # alpha = 0 follows nerfacto's step for step
        with torch.random.fork_rng(devices=[]):
            self.field = self._build_field()
        self._start_from(nerfacto_field)
        if self.config.edit_box is not None:
            self.field.set_edit_region(EditRegion.from_values(
                self.config.edit_box, self.config.edit_box_falloff, self.config.edit_box_bottom))
        self.field_original = None
        self.edit_moved_into_base = False
        """True once :meth:`load_state_dict` moved the loaded run's edit into the base (a chained edit's start)."""
        self.register_buffer("finetune_started", torch.tensor(False))
        if self.config.finetune:
            self.field_original = self._frozen_copy_of_field()
        with torch.random.fork_rng(devices=[]):
            self.camera_optimizer = GuideAwareCameraOptimizer(
                self.config.camera_optimizer, num_cameras=self.num_train_data, device="cpu"
            )
        self._setup_viewer_controls()
        use_fast_inference(self.proposal_networks)  # renders: the fast exact path (fast_inference.py)

    def _start_from(self, nerfacto_field: Dict[str, Tensor]) -> None:
        """Copy nerfacto's freshly initialised field parameters into the conditional field's nerfacto part (every
        parameter of the same name and shape; tiny-cuda-nn's fused modules, rebuilt as two, keep their own)."""
        own = self.field.state_dict()
        shared = {k: v for k, v in nerfacto_field.items() if k in own and own[k].shape == v.shape}
        self.field.load_state_dict(shared, strict=False)

    def _build_field(self) -> ConditionalNerfField:
        c = self.config
        field = ConditionalNerfField(
            self.scene_box.aabb,
            num_images=self.num_train_data,
            d_beta=c.d_beta,
            style_embed_dim=c.style_embed_dim,
            app_embed_dim=c.app_embed_dim,
            code_hidden_dim=c.code_hidden_dim,
            delta_hidden_dim=c.delta_hidden_dim,
            delta_num_layers=c.delta_num_layers,
            appearance_embedding_dim=c.appearance_embed_dim if c.use_appearance_embedding else 0,
            num_layers=c.num_layers,
            hidden_dim=c.hidden_dim,
            geo_feat_dim=c.geo_feat_dim,
            num_levels=c.num_levels,
            base_res=c.base_res,
            max_res=c.max_res,
            log2_hashmap_size=c.log2_hashmap_size,
            features_per_level=c.features_per_level,
            num_layers_color=c.num_layers_color,
            hidden_dim_color=c.hidden_dim_color,
            spatial_distortion=None if c.disable_scene_contraction else SceneContraction(order=float("inf")),
            average_init_density=c.average_init_density,
            implementation=c.implementation,
            prior_edit_regions=decode_prior_regions(c.prior_edit_regions),
        )
        use_fast_inference(field)  # renders: the fast exact path (fast_inference.py)
        return field

    def _frozen_copy_of_field(self) -> ConditionalNerfField:
        """A new field with the current field's weights, frozen (rebuilt rather than deep-copied: tcnn-safe)."""
        frozen = self._build_field().to(self.field.aabb.device)
        frozen.load_state_dict(self.field.state_dict())
        frozen.requires_grad_(False)
        frozen.eval()
        return frozen

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        """nerfacto's groups without the earlier edits of a chained run (frozen, and left out so that the optimizer
        state of the run being edited fits: same parameters, same order)."""
        groups = super().get_param_groups()
        prior = {id(p) for p in self.field.prior_edits.parameters()}
        if prior:
            groups["fields"] = [p for p in groups["fields"] if id(p) not in prior]
        return groups

    # ---------------------------------------------------------------------------------------- viewer controls
    def _setup_viewer_controls(self) -> None:
        """"Style alpha" slider and appearance choice, found by nerfstudio's viewer as model attributes."""
        from nerfstudio.viewer.viewer_elements import ViewerNumber, ViewerSlider

        self.viewer_alpha: float = float(self.config.default_alpha)
        self.viewer_beta_index: int = AVERAGE_APPEARANCE
        self.viewer_style_alpha = ViewerSlider(
            name="Style alpha",
            default_value=self.viewer_alpha,
            min_value=0.0,
            max_value=1.0,
            step=0.01,
            cb_hook=self._on_style_alpha,
            hint="0 = original scene, 1 = edited scene (paper Sec. 3.1)" if not self.config.prior_edit_regions else
            "0 = the earlier edits' result (a chained run; the true original is the first run of edit.json's chain), "
            "1 = with this edit",
        )
        self.viewer_appearance = ViewerNumber(
            name="Appearance (-1 = average)",
            default_value=AVERAGE_APPEARANCE,
            cb_hook=self._on_appearance,
            hint="beta index: -1 = average of the original images, i = training image i, >= 1000000 = guide image",
        )

    def _on_style_alpha(self, element) -> None:
        self.viewer_alpha = float(min(max(float(element.value), 0.0), 1.0))

    def _on_appearance(self, element) -> None:
        value = int(element.value)
        self.viewer_beta_index = value if value >= 0 else AVERAGE_APPEARANCE

    # ------------------------------------------------------------------------------------------- finetuning
    def begin_finetune(self) -> None:
        """Freeze a copy of the current field as the "original model" of Eqs. 3-4 (once per run) and, with
        ``freeze_original``, the alpha = 0 branch of the field itself (also when resuming a finetuned run)."""
        if self.config.freeze_original:
            # nothing reads the positions' gradients through the frozen branch (every finetune ray is a guide ray,
            # which the camera refinement leaves alone), unless normals are predicted
            self.field.freeze_base(position_grads=self.config.predict_normals)
            self.proposal_networks.requires_grad_(False)  # they place the samples the original is rendered with
        if bool(self.finetune_started):
            return
        self.field_original = self._frozen_copy_of_field()
        self.finetune_started.fill_(True)

    def get_training_callbacks(self, training_callback_attributes):
        from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

        callbacks = super().get_training_callbacks(training_callback_attributes)
        if self.config.finetune:

            def start_finetune(step: int) -> None:
                self.begin_finetune()

            callbacks.insert(
                0,
                TrainingCallback(
                    where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                    update_every_num_iters=1,
                    func=start_finetune,
                ),
            )
        return callbacks

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Also loads across the finetune boundary.

        A checkpoint of the original scene (no ``field_original.*``) loaded into a finetuning model IS the original
        model: its field weights become the frozen copy. A finetuned checkpoint re-creates the frozen copy. A
        checkpoint with one earlier edit fewer than ``prior_edit_regions`` names starts a chained edit
        (:meth:`_move_edit_into_base`).
        """
        state = dict(state_dict)
        if any(k.startswith(("field.density_mlp.", "field.color_mlp.")) for k in state):
            # nerfstudio loads pipelines with strict=False, which would silently leave this model untrained
            raise RuntimeError(
                "This checkpoint's state_dict comes from nerfeditor-ns 0.1, whose conditional field had another layout "
                "(E_style / E_app inside the heads); it cannot be loaded into the alpha-gated residual field. Retrain "
                "the scene with `ns-train nerfeditor`."
            )
        state = self._move_edit_into_base(state)
        has_original = any(k.startswith("field_original.") for k in state)
        if has_original and self.field_original is None:
            self.field_original = self._frozen_copy_of_field()
        elif not has_original and self.field_original is not None:
            for key, value in list(state.items()):
                if key.startswith("field."):
                    state["field_original." + key[len("field.") :]] = value
            state["finetune_started"] = torch.tensor(True)
        if "finetune_started" not in state:  # checkpoints written before the flag existed
            state["finetune_started"] = torch.tensor(has_original)
        return super().load_state_dict(state, strict=strict, assign=assign)

    def _move_edit_into_base(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """A chained edit's start: a checkpoint with one earlier edit fewer than this model (the run being edited)
        gets its residual moved to the newest ``field.prior_edits`` entry, this model's fresh residual for the new
        edit, and the result as the frozen "original model" (so L_br / L_ori / the penalty hold the new edit to the
        earlier edit's alpha = 1 scene). Any other count mismatch is refused."""
        wanted = len(self.field.prior_edits)
        saved = len({k.split(".")[2] for k in state if k.startswith("field.prior_edits.")})
        if saved == wanted:
            return state
        if saved != wanted - 1:
            raise RuntimeError(
                f"This checkpoint holds {saved} earlier edits but the run's config.yml names {wanted} "
                "(pipeline.model.prior_edit_regions): load a chained run with its own config.yml."
            )
        names = RESIDUAL_MODULES + RESIDUAL_BUFFERS
        own = self.field.state_dict()
        moved: Dict[str, Any] = {}
        for key, value in state.items():
            if key.startswith("field_original."):
                continue  # re-taken below from the field with the edit in its base
            if key.startswith("field.") and key[len("field.") :].split(".")[0] in names:
                moved[f"field.prior_edits.{saved}.{key[len('field.'):]}"] = value
            else:
                moved[key] = value
        for key, value in own.items():  # the new edit's residual: this model's fresh (zero-output) one
            if key.split(".")[0] in names:
                moved["field." + key] = value
        if self.field_original is not None:
            field = {k[len("field.") :]: v for k, v in moved.items() if k.startswith("field.")}
            moved.update({"field_original." + k: v for k, v in field.items()})
        moved["finetune_started"] = torch.tensor(self.field_original is not None)
        self.edit_moved_into_base = True
        return moved

    # ---------------------------------------------------------------------------------------------- forward
    def _fill_codes(self, ray_bundle: RayBundle) -> None:
        """Per-ray alpha / beta_index: the data manager's, else training: alpha 0 and beta = camera index
        (original image i has beta index i); eval / viewer: the viewer's alpha and appearance."""
        if ray_bundle.metadata is None:
            ray_bundle.metadata = {}
        metadata = ray_bundle.metadata
        shape = (*ray_bundle.shape, 1)
        device = ray_bundle.origins.device
        if "alpha" not in metadata:
            alpha = 0.0 if self.training else self.viewer_alpha
            metadata["alpha"] = torch.full(shape, alpha, dtype=torch.float32, device=device)
        if "beta_index" not in metadata:
            if self.training and ray_bundle.camera_indices is not None:
                metadata["beta_index"] = ray_bundle.camera_indices.reshape(shape).long()
            else:
                metadata["beta_index"] = torch.full(shape, self.viewer_beta_index, dtype=torch.long, device=device)

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Any]:
        """nerfacto's outputs for the rays' (alpha, beta) codes; in training also the per-sample densities (for
        L_br / L_ori) and the residual penalty of the field."""
        self._fill_codes(ray_bundle)
        if self.training:
            self.field.register_guide_betas(ray_bundle.metadata["beta_index"])
        outputs = super().get_outputs(ray_bundle)
        if self.training:
            outputs["density"] = self.field.last_density
            if self.field.last_delta_penalty is not None:
                outputs["delta_penalty"] = self.field.last_delta_penalty
        return outputs

    # ------------------------------------------------------------------------------------------------ losses
    @staticmethod
    def _guide_split(batch: Dict[str, Any], device: torch.device) -> Optional[Tuple[Tensor, Tensor, bool]]:
        """(original, guide) boolean ray masks and whether any ray is original, when the batch carries guide rays,
        else None. The data manager's host-side ``ray_counts`` answer "any?" without waiting for the GPU each step;
        without them the masks are asked."""
        set_index = batch.get("set_index")
        if set_index is None:
            return None
        counts = batch.get("ray_counts")
        if counts is not None and counts.get("guide", 0) + counts.get("patch", 0) == 0:
            return None
        set_index = set_index.to(device).reshape(-1)
        guide = set_index > 0
        if counts is None and not bool(guide.any()):
            return None
        original = ~guide
        return original, guide, counts["original"] > 0 if counts is not None else bool(original.any())

    def reference_density(
        self, ray_samples: RaySamples, guide: Tensor
    ) -> Float[Tensor, "num_rays num_samples 1"]:
        """Densities of the frozen original model at the same samples: the original scene (alpha = 0; density does
        not depend on the appearance) on every ray, guide (``guide`` True) or original."""
        if self.field_original is None:
            raise RuntimeError(
                "Guide rays in the batch but no original model: call model.begin_finetune() (or train with "
                "--pipeline.model.finetune True) before adding guide sets."
            )
        with torch.no_grad():
            density, _ = self.field_original.density_with(ray_samples, alpha=torch.zeros((), device=guide.device))
        return density.detach()

    def get_metrics_dict(self, outputs, batch):
        metrics_dict = super().get_metrics_dict(outputs, batch)
        split = self._guide_split(batch, outputs["rgb"].device)
        if split is not None and split[2]:  # PSNR of the original rays only
            original = split[0]
            gt_rgb = self.renderer_rgb.blend_background(batch["image"].to(self.device))
            metrics_dict["psnr"] = self.psnr(outputs["rgb"][original], gt_rgb[original])
        return metrics_dict

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        split = self._guide_split(batch, outputs["rgb"].device) if self.training else None
        if split is None:
            return super().get_loss_dict(outputs, batch, metrics_dict)  # plain training: nerfacto exactly
        original, guide, has_original = split
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)  # interlevel, distortion, camera opt
        image = batch["image"].to(self.device)
        pred_rgb, gt_rgb = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=image
        )
        if has_original:
            loss_dict["rgb_loss"] = self.rgb_loss(gt_rgb[original], pred_rgb[original])
        else:
            loss_dict["rgb_loss"] = pred_rgb.sum() * 0.0
        mask = batch["mask"].to(self.device).reshape(-1, 1) if "mask" in batch else torch.ones_like(pred_rgb[:, :1])
        c = self.config
        # Eq. 2
        loss_dict["style_loss"] = c.style_loss_mult * edit_losses.style_loss(
            pred_rgb[guide], gt_rgb[guide], mask[guide]
        )
        # our addition (see `background_color_loss_mult`): Eq. 2's form on the complement of the mask
        if c.background_color_loss_mult > 0:
            loss_dict["background_color_loss"] = c.background_color_loss_mult * edit_losses.style_loss(
                pred_rgb[guide], gt_rgb[guide], 1.0 - mask[guide]
            )
        ray_samples = outputs["ray_samples_list"][-1]
        density = outputs["density"]
        ref_density = self.reference_density(ray_samples, guide)
        # Eq. 3
        loss_dict["background_density_loss"] = c.background_loss_mult * edit_losses.background_density_loss(
            density[guide], ref_density[guide], mask[guide]
        )
        # Eq. 4
        if has_original:
            loss_dict["original_density_loss"] = c.original_loss_mult * edit_losses.original_density_loss(
                density[original], ref_density[original]
            )
        # Eq. 5, weighted by lambda (Eq. 6), on the CHANGE of depth against the frozen original at the same samples:
        # the paper smooths the stylized scene's depth; smoothing the change instead leaves the original geometry's
        # own edges (silhouette against background) alone, so a null edit costs nothing here.
        if "patch_shape" in batch and c.depth_loss_mult > 0:
            num_patches, side = (int(v) for v in batch["patch_shape"])
            count = num_patches * side * side
            if count > 0:
                patch_samples = ray_samples[-count:]
                with torch.no_grad():
                    ref_weights = patch_samples.get_weights(ref_density[-count:])
                    ref_depth = self.renderer_expected_depth(weights=ref_weights, ray_samples=patch_samples)
                change = outputs["expected_depth"].reshape(-1)[-count:] - ref_depth.reshape(-1)
                loss_dict["depth_loss"] = c.depth_loss_mult * edit_losses.depth_smoothness_loss(
                    change.reshape(num_patches, side, side)
                )
        # our addition: the residual stays zero where guides and masks do not ask for a change
        if "delta_penalty" in outputs and c.delta_penalty_mult > 0:
            loss_dict["delta_penalty"] = c.delta_penalty_mult * outputs["delta_penalty"]
        return loss_dict

    # ------------------------------------------------------------------------------------------------- eval
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """nerfacto's eval metrics and images; LPIPS only when it could be built offline."""
        if self.lpips is not None:
            return super().get_image_metrics_and_images(outputs, batch)
        # nerfacto calls self.lpips unconditionally: a NaN stand-in for the call, its key dropped afterwards
        self.lpips = lambda *args: torch.tensor(float("nan"))  # type: ignore[assignment]
        try:
            metrics_dict, images_dict = super().get_image_metrics_and_images(outputs, batch)
        finally:
            self.lpips = None
        metrics_dict.pop("lpips", None)
        return metrics_dict, images_dict
