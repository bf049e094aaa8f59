"""Chained edits: ns-edit on a run that ns-edit wrote keeps the first edit (its alpha = 1 scene is the new edit's
original) and records the chain; the model side on a toy scene and the tiny run edited twice through ``cli.main``."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_residual_field import _finetune, _guide_rays, _model, _pretrain, _render, make_rays


def test_a_chained_model_keeps_the_first_edit_in_its_base():
    """Edit 1 (red guides) -> its checkpoint loaded with one earlier edit in the config: alpha 0 IS edit 1's alpha 1
    (bit for bit), the frozen reference of L_br / L_ori is it too, the new residual starts at zero, edit 2 (blue
    guides) moves alpha 1 and leaves alpha 0 exactly; a chained checkpoint reloads, and a plain config refuses it."""
    from nerfeditor_ns.nerf.edit_region import encode_prior_region

    no_region = encode_prior_region(None, 0.25, 1.0)  # the first edit acted everywhere
    torch.manual_seed(0)
    first = _model()
    _pretrain(first, steps=10)
    guide = _guide_rays()
    _finetune(first, guide, torch.tensor([1.0, 0.0, 0.0]).expand(len(guide), 3), steps=10)
    rays = make_rays(64, seed=999)
    first_at1 = _render(first, rays, 1.0)["rgb"]

    chained = _model(finetune=True, prior_edit_regions=no_region)
    chained.load_state_dict(first.state_dict())
    assert chained.edit_moved_into_base and len(chained.field.prior_edits) == 1
    assert torch.equal(_render(chained, rays, 0.0)["rgb"], first_at1)
    assert torch.equal(_render(chained, rays, 1.0)["rgb"], first_at1)  # fresh residual: zero output
    samples = chained.proposal_sampler(rays[torch.arange(8)], density_fns=chained.density_fns)[0]
    with torch.no_grad():  # what L_br / L_ori hold the new edit to: edit 1's alpha 1 densities
        reference = chained.reference_density(samples, torch.ones(8, dtype=torch.bool))
        first_density, _ = first.field.density_with(samples, alpha=torch.ones(()))
    assert torch.equal(reference, first_density)
    prior_ids = {id(p) for p in chained.field.prior_edits.parameters()}
    assert not any(id(p) in prior_ids for group in chained.get_param_groups().values() for p in group)
    assert sum(len(g) for g in chained.get_param_groups().values()) == sum(
        len(g) for g in first.get_param_groups().values())  # the edited run's optimizer state fits

    blue = torch.tensor([0.0, 0.0, 1.0])
    _finetune(chained, guide, blue.expand(len(guide), 3), steps=10)
    at0, at1 = _render(chained, rays, 0.0)["rgb"], _render(chained, rays, 1.0)["rgb"]
    assert torch.equal(at0, first_at1)  # the first edit stays the base, exactly
    assert float((at1 - blue).norm(dim=-1).mean()) < 0.8 * float((at0 - blue).norm(dim=-1).mean())

    reloaded = _model(prior_edit_regions=no_region)
    reloaded.load_state_dict(chained.state_dict())
    assert not reloaded.edit_moved_into_base and torch.equal(_render(reloaded, rays, 1.0)["rgb"], at1)
    with pytest.raises(RuntimeError, match="1 earlier edits but the run's config.yml names 0"):
        _model().load_state_dict(chained.state_dict())


def test_editing_an_edited_run_keeps_the_first_edit(tiny_workspace, reference_edit):
    """The tiny run's reference edit (everywhere) edited again with a direction (default box region): the second run
    at alpha 0 renders the first edit's alpha 1, at alpha 1 it still shows the first edit (outside the second edit's
    masks it stays the first edit's render), and edit.json records the chain; the first run is not modified."""
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfeditor_ns.edit import cli
    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.eval.metrics import psnr
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets
    from nerfeditor_ns.nerf.ns_compat import nerfstudio_checkpoint_globals
    from tests.helpers.tiny_runs import FINETUNE_STEPS, SMALL, TINY_G, TRAIN_STEPS, tree_digest

    ws, first = tiny_workspace, reference_edit
    first_digest = tree_digest(first)
    out = ws["root"] / "edit_chain"
    argv = ["--load-config", str(first / "config.yml"), "--generator", str(TINY_G), "--cache-dir", str(ws["cache"]),
            "--output-dir", str(out), *SMALL, "--direction", "pc:0:-3", "--finetune-steps", "10",
            "--video-frames", "2"]
    assert cli.main(argv) == 0
    assert tree_digest(first) == first_digest, "the edited run was modified"

    with nerfstudio_checkpoint_globals():
        _, original, _, _ = eval_setup(ws["config"], test_mode="test")
        _, edit1, _, _ = eval_setup(first / "config.yml", test_mode="test")
        _, edit2, ckpt, step = eval_setup(out / "config.yml", test_mode="test")
    assert out in ckpt.parents and step == TRAIN_STEPS - 1 + FINETUNE_STEPS + 10
    guides = load_guide_sets(out / "guides")[0][0]
    cams, fg = guides.cameras, guides.masks

    def render(pipeline, alpha):
        return render_views(pipeline, cams, alpha=alpha, progress=False)["rgb"]

    true_original, first_at1 = render(original, 0.0), render(edit1, 1.0)
    second_at0, second_at1 = render(edit2, 0.0), render(edit2, 1.0)
    torch.testing.assert_close(second_at0, first_at1, atol=1e-5, rtol=0)  # alpha 0 = the first edit's result
    first_change = float((first_at1 - true_original).abs().mean())
    kept = float((second_at1 - first_at1).abs().mean())
    outside = psnr(second_at1, first_at1, 1.0 - fg)
    print(f"first edit's change {first_change:.4f}, second alpha 1 vs first alpha 1 {kept:.4f} "
          f"(outside the masks {outside:.1f} dB)")
    assert kept < 0.5 * first_change  # the first edit is still there
    assert outside > 30.0  # where the second edit does not act, the first edit's render stays
    assert float(((second_at1 - second_at0).abs() * fg).sum() / fg.sum().clamp_min(1)) > 1e-3  # the second edit took
    # the frozen "original model" of the second finetune (L_br / L_ori / penalty) is the first edit's alpha 1 scene
    frozen = edit2.model.field_original
    assert len(frozen.prior_edits) == 1
    for key, value in edit1.model.field.state_dict().items():
        target = frozen.state_dict()[key] if key.split(".")[0] not in ("style_encoder", "app_encoder",
                                                                       "delta_density_head", "delta_color_head",
                                                                       "guide_beta_indices") else \
            frozen.prior_edits[0].state_dict()[key]
        assert torch.equal(target.cpu(), value.cpu()), key

    # edit.json records the chain (oldest first)
    record = json.loads((out / "edit.json").read_text())
    first_record = json.loads((first / "edit.json").read_text())
    assert record["original_run"] == str((first / "config.yml").absolute())
    assert [e["edit"] for e in record["chain"]] == [first_record["edit"]]
    assert record["chain"][0]["run"] == str(first) and record["chain"][0]["original_run"] == str(ws["config"])
    assert record["chain"][0]["finetune"]["original_steps"] == record["finetune"]["original_steps"] == TRAIN_STEPS
    assert record["scene_cache"] == str(first.with_name(first.name + ".nerfeditor-cache"))  # keyed by the edited run
