"""Unit tests of the conditional field and NerfEditorModel (CPU, tiny networks, random rays)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.field_heads import FieldHeadNames

from nerfeditor_ns.nerf import model as model_module
from nerfeditor_ns.nerf.beta_codes import GUIDE_BETA_OFFSET
from nerfeditor_ns.nerf.field import AVERAGE_APPEARANCE
from nerfeditor_ns.nerf.model import NerfEditorModel, NerfEditorModelConfig


NUM_IMAGES = 5


def tiny_config(**overrides) -> NerfEditorModelConfig:
    base = dict(
        num_levels=4,
        base_res=8,
        max_res=64,
        log2_hashmap_size=10,
        hidden_dim=16,
        hidden_dim_color=16,
        num_layers_color=2,
        d_beta=4,
        style_embed_dim=4,
        app_embed_dim=4,
        code_hidden_dim=8,
        num_proposal_samples_per_ray=(16, 8),
        num_nerf_samples_per_ray=8,
        implementation="torch",
        average_init_density=1.0,
        proposal_net_args_list=[
            {"hidden_dim": 16, "log2_hashmap_size": 10, "num_levels": 2, "max_res": 32, "use_linear": False}
        ]
        * 2,
    )
    base.update(overrides)
    return NerfEditorModelConfig(**base)


def make_model(**overrides) -> NerfEditorModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NerfEditorModel(
            tiny_config(**overrides), scene_box=SceneBox(torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=NUM_IMAGES
        )


def make_rays(n: int, seed: int = 0, metadata=None, camera_indices=None) -> RayBundle:
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0, 0, 1.0]), dim=-1)
    if camera_indices is None:
        camera_indices = torch.randint(0, NUM_IMAGES, (n, 1), generator=g)
    return RayBundle(
        origins=torch.tensor([0.0, 0.0, -2.0]).expand(n, 3).clone(),
        directions=directions,
        pixel_area=torch.full((n, 1), 1e-4),
        camera_indices=camera_indices,
        nears=torch.full((n, 1), 0.05),
        fars=torch.full((n, 1), 4.0),
        metadata=dict(metadata or {}),
    )


def guide_batch_rays(n_orig: int = 24, n_guide: int = 24, seed: int = 0):
    n = n_orig + n_guide
    alpha = torch.cat([torch.zeros(n_orig, 1), torch.ones(n_guide, 1)])
    beta = torch.cat(
        [torch.randint(0, NUM_IMAGES, (n_orig, 1)), GUIDE_BETA_OFFSET + torch.arange(n_guide)[:, None]]
    ).long()
    rays = make_rays(n, seed, metadata={"alpha": alpha, "beta_index": beta})
    g = torch.Generator().manual_seed(seed + 1)
    batch = {
        "image": torch.rand(n, 3, generator=g),
        "mask": torch.ones(n, 1),
        "set_index": torch.cat([torch.zeros(n_orig), torch.ones(n_guide)]).long(),
        "alpha": alpha,
    }
    return rays, batch


# ------------------------------------------------------------------------------------------------------ field
def randomise_residual(model, scale: float = 0.5, seed: int = 0) -> None:
    """Give the zero-initialised residual heads arbitrary weights (as after a finetune)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.field.delta_density_head, model.field.delta_color_head):
            for p in head.parameters():
                p.copy_(scale * torch.randn(p.shape, generator=g))


def test_field_density_and_colour_depend_on_alpha_and_beta():
    torch.manual_seed(0)
    model = make_model()
    model.train()
    # the residual starts at zero by design (alpha = 1 is the original scene before finetuning): give it weights
    randomise_residual(model)
    rays = make_rays(16)
    model._fill_codes(rays)
    samples = rays.get_ray_samples(
        bin_starts=torch.linspace(0.5, 3.5, 9)[:-1].expand(16, 8)[..., None],
        bin_ends=torch.linspace(0.5, 3.5, 9)[1:].expand(16, 8)[..., None],
    )
    field = model.field
    out = field(samples)
    assert out[FieldHeadNames.RGB].shape == (16, 8, 3)
    assert out[FieldHeadNames.DENSITY].shape == (16, 8, 1)

    ones = torch.ones(16, 1, 1)
    d_alpha0, _ = field.density_with(samples, alpha=0 * ones)
    d_alpha1, _ = field.density_with(samples, alpha=ones)
    assert not torch.allclose(d_alpha0, d_alpha1), "density head ignores E_style(alpha)"
    # beta enters the density through the residual (guide codes): two guide images differ at alpha = 1
    d_beta0, _ = field.density_with(samples, alpha=ones, beta_index=torch.full((16, 1, 1), GUIDE_BETA_OFFSET))
    d_beta3, _ = field.density_with(samples, alpha=ones, beta_index=torch.full((16, 1, 1), GUIDE_BETA_OFFSET + 3))
    assert not torch.allclose(d_beta0, d_beta3), "density head ignores E_app(beta)"

    samples.metadata["alpha"] = ones
    rgb1 = field(samples)[FieldHeadNames.RGB]
    samples.metadata["alpha"] = 0 * ones
    rgb0 = field(samples)[FieldHeadNames.RGB]
    assert not torch.allclose(rgb0, rgb1), "colour head ignores alpha"


def test_average_appearance_is_mean_of_training_embeddings():
    model = make_model()
    field = model.field
    expected = field.embedding_appearance.mean(dim=0)
    app = field.base_appearance(torch.tensor([AVERAGE_APPEARANCE, 0, AVERAGE_APPEARANCE, GUIDE_BETA_OFFSET + 2]))
    torch.testing.assert_close(app[0], expected)
    torch.testing.assert_close(app[2], expected)
    torch.testing.assert_close(app[3], expected)  # guide images are renders at the average appearance
    assert not torch.allclose(app[1], expected)


def test_field_without_metadata_uses_original_scene_average_appearance():
    model = make_model()
    rays = make_rays(8)
    samples = rays.get_ray_samples(
        bin_starts=torch.full((8, 4, 1), 1.0) + torch.arange(4.0)[None, :, None] * 0.2,
        bin_ends=torch.full((8, 4, 1), 1.2) + torch.arange(4.0)[None, :, None] * 0.2,
    )
    samples.metadata = {}
    density_default, _ = model.field.get_density(samples)
    density_explicit, _ = model.field.density_with(
        samples, alpha=torch.zeros(8, 1, 1), beta_index=torch.full((8, 1, 1), AVERAGE_APPEARANCE)
    )
    torch.testing.assert_close(density_default, density_explicit)


# ----------------------------------------------------------------------------------------------- construction
def test_no_lpips_without_local_weights_and_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(model_module, "_LPIPS_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m1 = NerfEditorModel(tiny_config(), scene_box=SceneBox(torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=2)
        m2 = NerfEditorModel(tiny_config(), scene_box=SceneBox(torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=2)
    lpips_warnings = [w for w in caught if "LPIPS" in str(w.message)]
    assert len(lpips_warnings) == 1
    assert "alexnet-owt-7be5be79.pth" in str(lpips_warnings[0].message)
    assert m1.lpips is None and m2.lpips is None
    assert not any("lpip" in type(mod).__name__.lower() for mod in m1.modules())
    # once the file is in the hub cache, it is found (the metric would then be built from it)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / model_module.ALEXNET_CHECKPOINT).write_bytes(b"x")
    assert model_module.local_alexnet_checkpoint() == tmp_path / "checkpoints" / model_module.ALEXNET_CHECKPOINT


def test_param_groups_exclude_frozen_original():
    model = make_model()
    model.begin_finetune()
    field_params = {id(p) for p in model.get_param_groups()["fields"]}
    assert field_params == {id(p) for p in model.field.parameters()}
    assert not any(p.requires_grad for p in model.field_original.parameters())


# ------------------------------------------------------------------------------------------------------ losses
def test_plain_training_is_nerfactos_loss():
    torch.manual_seed(0)
    model = make_model()
    model.train()
    rays = make_rays(32)
    batch = {"image": torch.rand(32, 3), "set_index": torch.zeros(32, dtype=torch.long), "mask": torch.ones(32, 1)}
    outputs = model.get_outputs(rays)
    metrics = model.get_metrics_dict(outputs, batch)
    losses = model.get_loss_dict(outputs, batch, metrics)
    assert set(losses) == {"rgb_loss", "interlevel_loss", "distortion_loss", "camera_opt_regularizer"}
    torch.testing.assert_close(losses["rgb_loss"], torch.mean((outputs["rgb"] - batch["image"]) ** 2))
    # training rays without metadata: alpha 0 and beta = camera index
    assert torch.equal(rays.metadata["beta_index"], rays.camera_indices.long())
    assert float(rays.metadata["alpha"].abs().sum()) == 0.0


def test_guide_rays_losses():
    torch.manual_seed(0)
    model = make_model()
    model.train()
    rays, batch = guide_batch_rays()
    with pytest.raises(RuntimeError, match="begin_finetune"):
        outputs = model.get_outputs(rays)
        model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))

    model.begin_finetune()
    rays, batch = guide_batch_rays()
    outputs = model.get_outputs(rays)
    losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
    assert {"rgb_loss", "style_loss", "background_density_loss", "original_density_loss"} <= set(losses)
    assert "depth_loss" not in losses
    # RGB loss on original rays only; style loss on guide rays
    orig = batch["set_index"] == 0
    torch.testing.assert_close(losses["rgb_loss"], torch.mean((outputs["rgb"][orig] - batch["image"][orig]) ** 2))
    torch.testing.assert_close(losses["style_loss"], torch.mean((outputs["rgb"][~orig] - batch["image"][~orig]) ** 2))
    # frozen copy == current field at the start: L_ori is exactly 0; mask all ones: no background, L_br = 0
    assert float(losses["original_density_loss"]) == 0.0
    assert float(losses["background_density_loss"]) == 0.0

    # all-background guide rays: L_br compares sigma(alpha=1, guide beta) with the original scene, > 0 once the
    # (zero-initialised) residual is not zero
    randomise_residual(model)
    batch["mask"] = torch.zeros_like(batch["mask"])
    rays, _ = guide_batch_rays()
    outputs = model.get_outputs(rays)
    losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
    assert float(losses["background_density_loss"]) > 0.0
    total = sum(losses.values())
    total.backward()
    assert model.field.delta_density_head.net[0].weight.grad is not None
    assert all(p.grad is None for p in model.field_original.parameters())

    # after the field moves, L_ori sees it
    with torch.no_grad():
        for p in model.field.mlp_base.parameters():
            p.add_(0.5 * torch.randn_like(p))
    rays, batch = guide_batch_rays()
    outputs = model.get_outputs(rays)
    losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
    assert float(losses["original_density_loss"]) > 0.0


def test_finetune_with_the_frozen_branch_unrecorded_trains_the_same(monkeypatch):
    """With the alpha = 0 branch frozen, its hash encoding records no graph (no positions' gradients: the fast path)
    and a finetune step computes the same losses and the same gradients, to the last bit, as with nerfstudio's
    recorded encoding."""
    from nerfstudio.field_components.encodings import HashEncoding

    torch.manual_seed(0)
    model = make_model()
    model.train()
    model.begin_finetune()
    assert model.field.position_grads is False
    randomise_residual(model)
    recorded = []
    nerfstudio_forward = HashEncoding.pytorch_fwd
    monkeypatch.setattr(HashEncoding, "pytorch_fwd", lambda self, x: recorded.append(1) or nerfstudio_forward(self, x))

    def step(position_grads: bool):
        model.field.position_grads = position_grads
        model.zero_grad(set_to_none=True)
        recorded.clear()
        torch.manual_seed(3)  # the same stratified samples
        guide_cameras = NUM_IMAGES + torch.arange(32)[:, None]  # guide rays: the camera refinement leaves them
        codes = {"alpha": torch.ones(32, 1), "beta_index": GUIDE_BETA_OFFSET + torch.arange(32)[:, None]}
        rays = make_rays(32, seed=1, camera_indices=guide_cameras, metadata=codes)
        batch = {"image": torch.rand(32, 3, generator=torch.Generator().manual_seed(2)), "mask": torch.ones(32, 1),
                 "set_index": torch.ones(32).long(), "alpha": torch.ones(32, 1)}
        outputs = model.get_outputs(rays)
        losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return {k: v.detach() for k, v in losses.items()}, grads, len(recorded)

    losses_recorded, grads_recorded, calls_recorded = step(True)
    losses_fast, grads_fast, calls_fast = step(False)
    assert calls_recorded > 0 and calls_fast == 0
    assert set(losses_fast) == set(losses_recorded) and all(torch.equal(losses_fast[k], losses_recorded[k])
                                                            for k in losses_recorded)
    assert grads_fast.keys() == grads_recorded.keys() and any(k.startswith("field.delta_") for k in grads_fast)
    assert all(torch.equal(grads_fast[k], grads_recorded[k]) for k in grads_recorded)


def test_depth_loss_uses_last_patch_rays():
    torch.manual_seed(0)
    model = make_model(depth_loss_mult=0.5)
    model.train()
    model.begin_finetune()
    randomise_residual(model)  # an edited geometry: the change of depth is not zero
    rays, batch = guide_batch_rays(n_orig=16, n_guide=32)
    batch["patch_shape"] = (2, 4)
    outputs = model.get_outputs(rays)
    losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
    # Eq. 5 on the change of depth against the frozen original at the same samples, for the last 32 rays
    samples = outputs["ray_samples_list"][-1][-32:]
    with torch.no_grad():
        ref_density, _ = model.field_original.density_with(samples, alpha=torch.zeros(()))
        ref_depth = model.renderer_expected_depth(weights=samples.get_weights(ref_density), ray_samples=samples)
    d = (outputs["expected_depth"].reshape(-1)[-32:] - ref_depth.reshape(-1)).reshape(2, 4, 4)
    expected = ((d[:, :, 1:] - d[:, :, :-1]) ** 2).sum() + ((d[:, 1:] - d[:, :-1]) ** 2).sum()
    assert float(expected) > 0.0
    torch.testing.assert_close(losses["depth_loss"], 0.5 * expected / (2 * 4 * 3))


def test_camera_optimizer_skips_guide_cameras():
    model = make_model()
    model.train()
    with torch.no_grad():
        model.camera_optimizer.pose_adjustment.add_(0.1)
    rays = make_rays(8, camera_indices=torch.tensor([[0], [1], [2], [3], [4], [5], [9], [100]]))
    before = rays.origins.clone()
    model.camera_optimizer.apply_to_raybundle(rays)
    assert not torch.allclose(rays.origins[:5], before[:5])
    assert torch.equal(rays.origins[5:], before[5:])


# ------------------------------------------------------------------------------------------------ checkpoints
def test_state_dict_across_finetune_boundary():
    torch.manual_seed(0)
    original = make_model()
    state = original.state_dict()
    assert not any(k.startswith("field_original.") for k in state)

    finetuning = make_model(finetune=True)
    finetuning.load_state_dict(state)
    assert bool(finetuning.finetune_started)
    for key, value in original.field.state_dict().items():
        torch.testing.assert_close(finetuning.field_original.state_dict()[key], value)
    with torch.no_grad():  # an edit step: the field moves, the frozen copy must not be re-taken
        next(finetuning.field.parameters()).add_(1.0)
    finetuning.begin_finetune()
    w_key = next(iter(original.field.state_dict()))
    torch.testing.assert_close(finetuning.field_original.state_dict()[w_key], original.field.state_dict()[w_key])

    # a finetuned checkpoint re-creates the frozen copy, even in a model built without finetune
    reloaded = make_model()
    reloaded.load_state_dict(finetuning.state_dict())
    assert reloaded.field_original is not None and bool(reloaded.finetune_started)
    for key, value in finetuning.field_original.state_dict().items():
        torch.testing.assert_close(reloaded.field_original.state_dict()[key], value)


def test_finetune_config_callback_begins_at_first_step():
    model = make_model(finetune=True)
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation

    callbacks = model.get_training_callbacks(TrainingCallbackAttributes(None, None, None, None))
    assert not bool(model.finetune_started)
    for cb in callbacks:
        cb.run_callback_at_location(0, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    assert bool(model.finetune_started)


# ----------------------------------------------------------------------------------------------------- viewer
def test_viewer_controls_found_and_change_the_render():
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement, ViewerNumber, ViewerSlider

    torch.manual_seed(0)
    # trained from scratch here, so the alpha = 0 branch must learn too (not frozen at begin_finetune)
    model = make_model(
        camera_optimizer=dataclasses.replace(NerfEditorModelConfig().camera_optimizer, mode="off"),
        freeze_original=False,
    )
    assert isinstance(model.viewer_style_alpha, ViewerSlider)
    assert isinstance(model.viewer_appearance, ViewerNumber)
    found = {e for _, e in parse_object(model, ViewerElement, "Custom Elements")}
    assert {model.viewer_style_alpha, model.viewer_appearance} <= found

    # toy finetune: original rays (alpha 0) -> blue, guide rays (alpha 1) -> red
    model.train()
    model.begin_finetune()
    params = [p for group in model.get_param_groups().values() for p in group]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    for step in range(60):
        rays, batch = guide_batch_rays(16, 16, seed=step)
        batch["image"] = torch.cat([blue.expand(16, 3), red.expand(16, 3)])
        outputs = model.get_outputs(rays)
        losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    model.eval()

    def render() -> torch.Tensor:
        with torch.no_grad():
            return model.get_outputs(make_rays(32, seed=999))["rgb"].mean(0)

    model.viewer_style_alpha.value = 0.0
    model.viewer_style_alpha.cb_hook(model.viewer_style_alpha)
    at0 = render()
    model.viewer_style_alpha.value = 1.0
    model.viewer_style_alpha.cb_hook(model.viewer_style_alpha)
    assert model.viewer_alpha == 1.0
    at1 = render()
    assert at0[2] > at0[0] and at1[0] > at1[2], (at0, at1)

    model.viewer_appearance.value = 3
    model.viewer_appearance.cb_hook(model.viewer_appearance)
    assert model.viewer_beta_index == 3
    rays = make_rays(4)
    model._fill_codes(rays)
    assert torch.equal(rays.metadata["beta_index"], torch.full((4, 1), 3))
    assert torch.equal(rays.metadata["alpha"], torch.ones(4, 1))
    model.viewer_appearance.value = -7
    model.viewer_appearance.cb_hook(model.viewer_appearance)
    assert model.viewer_beta_index == AVERAGE_APPEARANCE


def test_a_seeded_model_starts_as_nerfacto_and_leaves_its_random_stream_alone(monkeypatch):
    """Same seed: nerfacto's field and proposal parameters bit for bit, and the same random numbers afterwards (so
    with the same data manager, training at alpha = 0 follows nerfacto step for step)."""
    from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig

    monkeypatch.setattr(model_module, "local_alexnet_checkpoint", lambda: None)  # no LPIPS on either side
    import torchmetrics.image.lpip as lpip_module

    monkeypatch.setattr(lpip_module, "LearnedPerceptualImagePatchSimilarity", lambda *a, **k: None)
    config = tiny_config(num_layers_color=3)  # nerfacto 1.1.5 builds its colour head with 3 layers whatever it is told
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(NerfactoModelConfig) if f.name != "_target"}
    box = SceneBox(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(7)
        nerfacto = NerfactoModel(NerfactoModelConfig(**shared), scene_box=box, num_train_data=NUM_IMAGES)
        after_nerfacto = torch.rand(4)
        torch.manual_seed(7)
        ours = NerfEditorModel(config, scene_box=box, num_train_data=NUM_IMAGES)
        after_ours = torch.rand(4)
    assert torch.equal(after_nerfacto, after_ours)
    theirs, mine = nerfacto.field.state_dict(), ours.field.state_dict()
    assert theirs and [k for k, v in theirs.items() if not torch.equal(v, mine[k])] == []
    for a, b in zip(nerfacto.proposal_networks.parameters(), ours.proposal_networks.parameters()):
        assert torch.equal(a, b)
    # and the same rays give the same outputs at alpha 0
    rays = make_rays(16)
    with torch.no_grad():
        torch.manual_seed(1)
        out_theirs = nerfacto.get_outputs(make_rays(16))
        torch.manual_seed(1)
        out_mine = ours.get_outputs(rays)
    torch.testing.assert_close(out_mine["rgb"], out_theirs["rgb"])
