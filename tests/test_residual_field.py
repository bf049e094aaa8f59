"""The gated residual of the conditional field: alpha = 0 is nerfacto's field untouched by the residual, alpha = 1
starts as the original scene and stays it where guides do not ask for a change (CPU, tiny networks, toy rays)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import torch

from nerfeditor_ns.nerf import losses as edit_losses
from nerfeditor_ns.nerf.beta_codes import GUIDE_BETA_OFFSET, beta_code
from nerfeditor_ns.nerf.field import AVERAGE_APPEARANCE
from nerfeditor_ns.nerf.model import NerfEditorModel, NerfEditorModelConfig
from tests.test_model import NUM_IMAGES, make_model, make_rays, randomise_residual

NUM_GUIDES = 4


def _model(**overrides) -> NerfEditorModel:
    off = dataclasses.replace(NerfEditorModelConfig().camera_optimizer, mode="off")
    return make_model(camera_optimizer=off, **overrides)


def _target_colour(rays) -> torch.Tensor:
    """A smooth 'scene' for the toy: colour as a function of the ray direction."""
    return (0.5 + 2.0 * (rays.directions - torch.tensor([0.0, 0.0, 1.0]))).clamp(0.05, 0.95)


def _render(model: NerfEditorModel, rays, alpha: float, beta_index: int = AVERAGE_APPEARANCE) -> Dict[str, torch.Tensor]:
    """Eval-mode render of a copy of ``rays`` at one (alpha, beta) for every ray."""
    was_training = model.training
    model.eval()
    n = len(rays)
    rays = rays[torch.arange(n)]
    rays.metadata = {"alpha": torch.full((n, 1), alpha), "beta_index": torch.full((n, 1), beta_index)}
    with torch.no_grad():
        out = model.get_outputs(rays)
    model.train(was_training)
    return out


def _guide_rays(seed: int = 123, n: int = 64):
    """Fixed guide rays: NUM_GUIDES guide images (beta indices from GUIDE_BETA_OFFSET), alpha 1."""
    rays = make_rays(n, seed=seed, camera_indices=GUIDE_BETA_OFFSET + torch.arange(n)[:, None] % NUM_GUIDES)
    beta = rays.camera_indices.clone()
    rays.metadata = {"alpha": torch.ones(n, 1), "beta_index": beta}
    return rays


def _cat(a, b):
    """Two flat ray bundles as one (every field and metadata entry concatenated)."""
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(a)}
    for name, value in values.items():
        if name == "metadata":
            values[name] = {k: torch.cat([a.metadata[k], b.metadata[k]]) for k in a.metadata}
        elif value is not None:
            values[name] = torch.cat([value, getattr(b, name)])
    return type(a)(**values)


def _pretrain(model: NerfEditorModel, steps: int = 60) -> None:
    model.train()
    params = [p for group in model.get_param_groups().values() for p in group]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for step in range(steps):
        rays = make_rays(48, seed=step)
        batch = {"image": _target_colour(rays), "set_index": torch.zeros(48, dtype=torch.long)}
        outputs = model.get_outputs(rays)
        losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()


def _finetune(model: NerfEditorModel, guide_rays, guide_rgb: torch.Tensor, steps: int = 40) -> None:
    """Finetune on batches of original rays (alpha 0, own image) + the guide rays with the given colours."""
    model.train()
    model.begin_finetune()
    params = [p for group in model.get_param_groups().values() for p in group]
    optimizer = torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-2)
    n_guide = len(guide_rays)
    for step in range(steps):
        orig = make_rays(32, seed=1000 + step)
        orig.metadata = {"alpha": torch.zeros(32, 1), "beta_index": orig.camera_indices.clone()}
        rays = _cat(orig, guide_rays)
        batch = {
            "image": torch.cat([_target_colour(orig), guide_rgb]),
            "mask": torch.ones(32 + n_guide, 1),
            "set_index": torch.cat([torch.zeros(32), torch.ones(n_guide)]).long(),
        }
        outputs = model.get_outputs(rays)
        losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        assert "delta_penalty" in losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()


def _snapshot(model: NerfEditorModel) -> Tuple[torch.Tensor, torch.Tensor]:
    rays = make_rays(64, seed=999)
    out = _render(model, rays, 0.0)
    return out["rgb"], out["depth"]


# ------------------------------------------------------------------------------------------------------ tests
def test_alpha0_ignores_the_residual_and_skips_it():
    torch.manual_seed(0)
    model = _model()
    rgb0, depth0 = _snapshot(model)
    # arbitrary residual, code encoders and guide codes: alpha = 0 is bit-for-bit unchanged
    randomise_residual(model, scale=2.0)
    with torch.no_grad():
        for p in list(model.field.style_encoder.parameters()) + list(model.field.app_encoder.parameters()):
            p.add_(torch.randn_like(p))
    model.field.register_guide_betas(GUIDE_BETA_OFFSET + torch.arange(3))
    rgb0_after, depth0_after = _snapshot(model)
    assert torch.equal(rgb0, rgb0_after) and torch.equal(depth0, depth0_after)
    # ... and the residual is not evaluated at all (no call, no penalty) when every ray has alpha 0
    calls = []
    hooks = [
        head.register_forward_hook(lambda *args: calls.append(1))
        for head in (model.field.delta_density_head, model.field.delta_color_head, model.field.app_encoder)
    ]
    model.train()
    rays = make_rays(16)
    outputs = model.get_outputs(rays)
    assert calls == [] and "delta_penalty" not in outputs
    _render(model, rays, 1.0)
    assert len(calls) >= 2  # sanity: the hooks see the residual at alpha = 1
    for h in hooks:
        h.remove()


def test_alpha1_is_alpha0_at_init_and_a_null_edit_has_zero_error():
    torch.manual_seed(0)
    model = _model()
    _pretrain(model, steps=10)  # a base that is not at its initialisation
    rays = make_rays(48, seed=5)
    at0 = _render(model, rays, 0.0)
    assert torch.equal(at0["rgb"], _render(model, rays, 1.0)["rgb"])
    assert torch.equal(at0["rgb"], _render(model, rays, 0.5)["rgb"])
    # guide rays (alpha 1, their own guide beta) at the start of finetuning render the original at the average
    # appearance, the look guide images are rendered with: a null edit has exactly zero colour loss
    model.begin_finetune()
    guide = _guide_rays()
    target = _render(model, guide, 0.0)["rgb"]
    assert torch.equal(target, _render(model, guide, 1.0, GUIDE_BETA_OFFSET)["rgb"])
    model.train()
    torch.manual_seed(7)
    outputs = model.get_outputs(guide[torch.arange(len(guide))])
    n = len(guide)
    batch = {
        "image": target,
        "mask": torch.ones(n, 1),
        "set_index": torch.ones(n, dtype=torch.long),
    }
    torch.manual_seed(7)  # same jitter for the alpha 0 training-mode render
    plain = guide[torch.arange(n)]
    plain.metadata = {"alpha": torch.zeros(n, 1), "beta_index": torch.full((n, 1), AVERAGE_APPEARANCE)}
    reference = model.get_outputs(plain)["rgb"]
    batch["image"] = reference.detach()
    batch["patch_shape"] = (1, 8)  # the last 64 rays as one 8 x 8 patch for L_depth
    losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
    assert float(losses["style_loss"]) == 0.0
    assert float(losses["background_density_loss"]) == 0.0
    assert float(losses["delta_penalty"]) == 0.0
    # L_depth smooths the change of depth against the original: zero for a null edit, although the original's own
    # depth is not smooth (the plain Eq. 5 form would pull the edited geometry away from it)
    assert float(losses["depth_loss"]) < 1e-12
    plain_depth = outputs["expected_depth"].reshape(1, 8, 8)
    assert float(edit_losses.depth_smoothness_loss(plain_depth)) > 1e-6


def test_null_edit_finetune_keeps_alpha1_original():
    """Guides equal to the original renders: alpha = 1 stays within 40 dB PSNR (and 0.03 max abs, RGB in [0, 1]) of
    alpha = 0 after 40 finetuning steps.

    The residual only sees the difference between the jittered training samples and the eval-mode renders the
    targets were made with (on this crude 60-step toy scene about 0.004 mean abs), so it stays near zero (zero start,
    penalty); alpha = 0 is frozen, so it is exactly kept.
    """
    torch.manual_seed(0)
    model = _model()
    _pretrain(model)
    rgb0_before, _ = _snapshot(model)
    guide = _guide_rays()
    target = _render(model, guide, 0.0)["rgb"]
    _finetune(model, guide, target)
    rays = make_rays(64, seed=999)
    at0, at1 = _render(model, rays, 0.0)["rgb"], _render(model, rays, 1.0)["rgb"]
    assert torch.equal(at0, rgb0_before)
    diff = (at1 - at0).abs()
    psnr = float(-10 * torch.log10((diff**2).mean()))
    print(f"null edit: alpha1 vs alpha0 {psnr:.1f} dB, max abs {float(diff.max()):.2e}, mean {float(diff.mean()):.2e}")
    assert psnr > 40.0 and float(diff.max()) < 0.03
    guide_at1 = _render(model, guide, 1.0, GUIDE_BETA_OFFSET + 1)["rgb"]
    assert float((guide_at1 - target).abs().max()) < 0.03


def test_coloured_guide_moves_alpha1_and_keeps_alpha0():
    torch.manual_seed(0)
    model = _model()
    _pretrain(model)
    rgb0_before, depth0_before = _snapshot(model)
    guide = _guide_rays()
    red = torch.tensor([1.0, 0.0, 0.0]).expand(len(guide), 3)
    _finetune(model, guide, red)
    rays = make_rays(64, seed=999)
    at0, at1 = _render(model, rays, 0.0)["rgb"], _render(model, rays, 1.0)["rgb"]
    assert torch.equal(at0, rgb0_before)  # the original scene is exactly kept (alpha = 0 branch frozen)
    dist0 = float((at0 - red[:1]).norm(dim=-1).mean())
    dist1 = float((at1 - red[:1]).norm(dim=-1).mean())
    print(f"distance to the guide colour: alpha 0 {dist0:.3f}, alpha 1 {dist1:.3f}")
    assert dist1 < 0.7 * dist0
    half = float((_render(model, rays, 0.5)["rgb"] - red[:1]).norm(dim=-1).mean())
    assert dist1 < half < dist0  # the slider blends


def test_freeze_off_lets_alpha0_move_and_l_ori_sees_it():
    torch.manual_seed(0)
    model = _model(freeze_original=False)
    _pretrain(model, steps=10)
    rgb0_before, _ = _snapshot(model)
    guide = _guide_rays()
    _finetune(model, guide, torch.tensor([1.0, 0.0, 0.0]).expand(len(guide), 3), steps=10)
    rgb0_after, _ = _snapshot(model)
    assert not torch.equal(rgb0_before, rgb0_after)
    assert all(p.requires_grad for p in model.field.mlp_base.parameters())


def test_view_appearance_is_mean_over_guide_codes_and_survives_a_checkpoint():
    torch.manual_seed(0)
    model = _model()
    field = model.field
    torch.testing.assert_close(field.view_app_embedding(), torch.zeros(field.app_encoder.net[-1].out_features))
    model.train()
    model.get_outputs(_guide_rays())  # training batches register their guide codes
    assert field.guide_beta_indices.tolist() == [GUIDE_BETA_OFFSET + k for k in range(NUM_GUIDES)]
    expected = field.app_encoder(beta_code(GUIDE_BETA_OFFSET + torch.arange(NUM_GUIDES), field.d_beta)).mean(0)
    torch.testing.assert_close(field.view_app_embedding(), expected)
    other = _model()
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.field.guide_beta_indices, field.guide_beta_indices)
    torch.testing.assert_close(other.field.view_app_embedding(), expected)
    assert NUM_IMAGES == field.num_images


def test_alpha0_computes_nerfactos_field():
    """With nerfacto's weights copied in, the field at alpha = 0 gives nerfacto's densities and colours: per-image
    appearance in training, the average appearance at eval."""
    from nerfstudio.field_components.field_heads import FieldHeadNames
    from nerfstudio.fields.nerfacto_field import NerfactoField

    torch.manual_seed(0)
    model = _model()
    ours = model.field
    c = model.config
    theirs = NerfactoField(
        ours.aabb, num_images=NUM_IMAGES, num_layers=c.num_layers, hidden_dim=c.hidden_dim, num_levels=c.num_levels,
        base_res=c.base_res, max_res=c.max_res, log2_hashmap_size=c.log2_hashmap_size, num_layers_color=c.num_layers_color,
        features_per_level=c.features_per_level, hidden_dim_color=c.hidden_dim_color,
        appearance_embedding_dim=c.appearance_embed_dim, use_average_appearance_embedding=True,
        spatial_distortion=ours.spatial_distortion, average_init_density=c.average_init_density, implementation="torch",
    )  # fmt: skip
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.3 * torch.randn_like(p))  # not the initialisation: any nerfacto weights
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not unexpected and all(
        k.split(".")[0] in ("style_encoder", "app_encoder", "delta_density_head", "delta_color_head", "guide_beta_indices")
        for k in missing
    ), missing
    randomise_residual(model)  # and whatever the residual holds
    rays = make_rays(16, seed=3)
    bins = torch.linspace(0.5, 3.5, 9)
    samples = rays.get_ray_samples(bin_starts=bins[:-1].expand(16, 8)[..., None], bin_ends=bins[1:].expand(16, 8)[..., None])
    for training, beta in ((True, rays.camera_indices), (False, torch.full((16, 1), AVERAGE_APPEARANCE))):
        ours.train(training)
        theirs.train(training)
        samples.metadata = {"alpha": torch.zeros(16, 1, 1), "beta_index": beta[:, None]}
        with torch.no_grad():
            a, b = ours(samples), theirs(samples)
        torch.testing.assert_close(a[FieldHeadNames.DENSITY], b[FieldHeadNames.DENSITY], rtol=0, atol=0)
        torch.testing.assert_close(a[FieldHeadNames.RGB], b[FieldHeadNames.RGB], rtol=1e-6, atol=1e-7)


def test_checkpoints_of_the_old_field_layout_are_refused_not_loaded_silently():
    model = _model()
    state = {k: v for k, v in model.state_dict().items()}
    state["field.density_mlp.layers.0.weight"] = torch.zeros(4, 4)  # a key of the 0.1 conditional field
    import pytest

    with pytest.raises(RuntimeError, match="nerfeditor-ns 0.1"):
        model.load_state_dict(state, strict=False)
