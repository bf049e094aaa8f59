"""The edit region: a soft 3D cube that gates the residual, so the edited scene (alpha = 1) is the original scene
exactly outside the subject's box, whatever the residual has learned (CPU, tiny networks, toy rays)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from nerfeditor_ns.nerf.edit_region import NUM_BOX_VALUES, EditRegion
from nerfstudio.field_components.field_heads import FieldHeadNames
from tests.test_model import make_model, make_rays, randomise_residual

# 45 degrees about the vertical axis: the cube's axes are not the world's
C, S_ = math.cos(math.pi / 4), math.sin(math.pi / 4)
ROTATION = (C, 0.0, S_, 0.0, 1.0, 0.0, -S_, 0.0, C)


def test_weight_is_one_inside_zero_outside_and_smooth_in_the_shell():
    region = EditRegion(centre=(0.0, 0.0, 0.0), half_size=0.5, rotation=(1, 0, 0, 0, 1, 0, 0, 0, 1), falloff=0.2)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.49, -0.49, 0.49], [0.55, 0.0, 0.0], [0.6, 0.0, 0.0], [0.0, 0.0, -0.7]])
    w = region.weight(pts)
    assert w[0] == 1.0 and w[1] == 1.0  # inside the cube
    # in the shell: t = (1.2 - 0.55 / 0.5) / 0.2 = 0.5 -> 3t^2 - 2t^3 = 0.5
    assert float(w[2]) == pytest.approx(0.5, abs=1e-6)
    assert w[3] == 0.0 and w[4] == 0.0  # at / beyond (1 + falloff) * half_size
    # cut below the centre along "up" (the chin): the same depth below is outside, above still inside
    cut = EditRegion(centre=(0.0, 0.0, 0.0), half_size=0.5, rotation=(1, 0, 0, 0, 1, 0, 0, 0, 1), falloff=0.2,
                     bottom=0.6)
    assert cut.weight(torch.tensor([[0.0, -0.45, 0.0], [0.0, 0.45, 0.0], [0.0, -0.25, 0.0]])).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="bottom"):
        EditRegion(centre=(0, 0, 0), half_size=1.0, rotation=ROTATION, bottom=0.0)


def test_weight_follows_the_box_rotation_and_centre():
    region = EditRegion(centre=(1.0, 0.0, 0.0), half_size=0.5, rotation=ROTATION, falloff=0.1)
    # a corner of the rotated cube lies at distance 0.5 * sqrt(2) along the world x axis from its centre
    on_diagonal = torch.tensor([[1.0 + 0.69, 0.0, 0.0]])
    assert float(region.weight(on_diagonal)) == 1.0
    # the same offset along a world axis of an axis-aligned cube is far outside it
    aligned = EditRegion(centre=(1.0, 0.0, 0.0), half_size=0.5, rotation=(1, 0, 0, 0, 1, 0, 0, 0, 1), falloff=0.1)
    assert float(aligned.weight(on_diagonal)) == 0.0


def test_config_values_round_trip_and_bad_values_are_refused():
    region = EditRegion(centre=(0.1, 0.2, 0.3), half_size=0.4, rotation=ROTATION, falloff=0.3)
    values = region.to_values()
    assert len(values) == NUM_BOX_VALUES
    assert EditRegion.from_values(values, 0.3) == region
    with pytest.raises(ValueError, match="13 numbers"):
        EditRegion.from_values(values[:-1], 0.3)
    with pytest.raises(ValueError, match="positive half-size"):
        EditRegion(centre=(0, 0, 0), half_size=0.0, rotation=ROTATION)
    with pytest.raises(ValueError, match="positive falloff"):
        EditRegion(centre=(0, 0, 0), half_size=1.0, rotation=ROTATION, falloff=0.0)


def _samples(n: int = 16):
    rays = make_rays(n)  # origins at z = -2 looking along +z; samples from z = -1.5 to 1.5
    bins = torch.linspace(0.5, 3.5, 13)
    return rays.get_ray_samples(bin_starts=bins[:-1].expand(n, 12)[..., None], bin_ends=bins[1:].expand(n, 12)[..., None])


def test_residual_acts_only_inside_the_edit_region():
    box = EditRegion(centre=(0.0, 0.0, 0.0), half_size=0.3, rotation=(1, 0, 0, 0, 1, 0, 0, 0, 1), falloff=0.25)
    model = make_model(edit_box=box.to_values(), edit_box_falloff=0.25)
    assert model.field.edit_region == box  # the config's box reaches the field
    randomise_residual(model)  # as after a finetune that learned a change everywhere
    model.eval()
    samples = _samples()
    weight = box.weight(samples.frustums.get_positions())  # [16, 12]
    ones = torch.ones(16, 1, 1)
    with torch.no_grad():
        d0, _ = model.field.density_with(samples, alpha=0 * ones)
        d1, _ = model.field.density_with(samples, alpha=ones)
        samples.metadata["alpha"] = ones
        rgb1 = model.field(samples)[FieldHeadNames.RGB]
        samples.metadata["alpha"] = 0 * ones
        rgb0 = model.field(samples)[FieldHeadNames.RGB]
    outside, inside = weight == 0, weight == 1
    assert bool(outside.any()) and bool(inside.any())
    # outside the region alpha = 1 IS the original scene, bit for bit
    assert torch.equal(d1[outside], d0[outside]) and torch.equal(rgb1[outside], rgb0[outside])
    # inside it the residual acts
    assert not torch.allclose(d1[inside], d0[inside]) and not torch.allclose(rgb1[inside], rgb0[inside])

    # without a region the same residual changes the samples outside the box too
    ungated = make_model()
    ungated.load_state_dict(model.state_dict())
    ungated.eval()
    with torch.no_grad():
        e0, _ = ungated.field.density_with(samples, alpha=0 * ones)
        e1, _ = ungated.field.density_with(samples, alpha=ones)
    assert not torch.allclose(e1[outside], e0[outside])


def test_finetune_config_carries_the_box_and_leaves_the_original_alone(tmp_path):
    from nerfeditor_ns.edit import finetune as ft
    from nerfeditor_ns.method_configs import nerfeditor_tiny

    original = copy.deepcopy(nerfeditor_tiny.config)
    original.output_dir, original.experiment_name, original.timestamp = tmp_path / "outputs", "face", "run"
    before = copy.deepcopy(original)
    region = EditRegion(centre=(0.0, 0.1, 0.2), half_size=0.3, rotation=ROTATION, falloff=0.1, bottom=0.8)
    run_dir = tmp_path / "edit"
    cfg = ft.build_finetune_config(original, run_dir, run_dir / "guides", finetune_steps=3, edit_region=region)
    m = cfg.pipeline.model
    assert EditRegion.from_values(m.edit_box, m.edit_box_falloff, m.edit_box_bottom) == region
    assert ft.build_finetune_config(original, run_dir, run_dir / "guides", finetune_steps=3).pipeline.model.edit_box is None
    assert original == before and original.pipeline.model.edit_box is None
