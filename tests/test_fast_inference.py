"""The fast inference paths (nerfeditor_ns/nerf/fast_inference.py) give nerfstudio's values to the last bit, and the
GAN loops' deferred loss read-back (nerfeditor_ns/gan/loss_log.py) the per-step numbers."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.spatial_distortions import SceneContraction

from nerfeditor_ns.gan.loss_log import LossLog
from nerfeditor_ns.nerf.fast_inference import InferenceHashEncoding, InferenceSceneContraction, use_fast_inference


@pytest.mark.parametrize("levels,max_res,log2", [(4, 64, 12), (8, 256, 14), (3, 2048, 19)])
def test_hash_encoding_equals_nerfstudio_bit_for_bit(levels, max_res, log2):
    torch.manual_seed(levels)
    enc = HashEncoding(num_levels=levels, max_res=max_res, log2_hashmap_size=log2, implementation="torch")
    x = torch.rand(64, 37, 3)
    x[0] = x[0] * 4 - 2  # coordinates outside [0, 1] too: negative hashes, the modulo's sign
    with torch.no_grad():
        expected = enc(x)
        assert use_fast_inference(enc) == 1 and isinstance(enc, InferenceHashEncoding)
        fast = enc(x)
    assert fast.shape == expected.shape and torch.equal(fast, expected)
    # with gradients (training) nerfstudio's own forward runs: same values, and a gradient reaches the table
    x.requires_grad_(True)
    out = enc(x)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    assert enc.hash_table.grad is not None and enc.hash_table.grad.abs().sum() > 0


def test_hash_encoding_in_several_passes_and_frozen_under_grad_mode(monkeypatch):
    """More points than one pass holds: the passes join to nerfstudio's values. A frozen table fed positions without
    gradients takes the fast path even with grad mode on (an edit's finetune), and records no graph."""
    from nerfeditor_ns.nerf import fast_inference

    torch.manual_seed(1)
    enc = HashEncoding(num_levels=4, max_res=128, log2_hashmap_size=12, implementation="torch")
    x = torch.rand(5, 301, 3) * 1.2 - 0.1
    with torch.no_grad():
        expected = enc(x)
    use_fast_inference(enc)
    monkeypatch.setattr(fast_inference, "POINT_LEVELS_PER_PASS", 4 * 97)  # 97 points a pass: 16 passes, a ragged end
    with torch.no_grad():
        assert torch.equal(enc(x), expected)
    enc.hash_table.requires_grad_(False)

    def nerfstudio_forward(*args, **kwargs):
        raise AssertionError("nerfstudio's recorded forward ran for a frozen encoding")

    monkeypatch.setattr(HashEncoding, "pytorch_fwd", nerfstudio_forward)
    with torch.enable_grad():
        out = enc(x)
    assert torch.equal(out, expected) and out.grad_fn is None


def test_scene_contraction_equals_nerfstudio_bit_for_bit():
    torch.manual_seed(0)
    x = torch.randn(1000, 3) * 3
    x[0] = torch.tensor([0.5, -0.2, 0.1])  # inside the unit cube: unchanged
    contraction = SceneContraction(order=float("inf"))
    with torch.no_grad():
        expected = contraction(x)
        use_fast_inference(contraction)
        assert isinstance(contraction, InferenceSceneContraction)
        fast = contraction(x)
    assert torch.equal(fast, expected) and torch.equal(fast[0], x[0]) and float(fast.abs().max()) <= 2


def test_nerfeditor_renders_equal_with_and_without_the_fast_paths():
    """A nerfeditor-tiny model (random weights, hash tables scaled up so the encoding shapes the result) renders the
    same pixels through the fast paths as through nerfstudio's code, at alpha 0 and 1."""
    import copy

    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.scene_box import SceneBox

    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.method_configs import nerfeditor_tiny

    torch.manual_seed(0)
    config = copy.deepcopy(nerfeditor_tiny.config.pipeline.model)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=2,
                         metadata={})
    switched = [m for m in model.modules() if isinstance(m, (InferenceHashEncoding, InferenceSceneContraction))]
    assert len([m for m in switched if isinstance(m, InferenceHashEncoding)]) >= 3  # field + 2 proposal networks
    with torch.no_grad():
        for m in switched:
            if isinstance(m, InferenceHashEncoding):
                m.hash_table.normal_()
    c2w = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.5]], [[0, 0, 1, 2.5], [0, 1, 0, 0], [-1, 0, 0, 0]]])
    cameras = Cameras(camera_to_worlds=c2w, fx=12.0, fy=12.0, cx=6.0, cy=6.0, width=12, height=12)
    fast = {alpha: render_views(model, cameras, alpha, progress=False) for alpha in (0.0, 1.0)}
    for module in switched:  # back to nerfstudio's classes
        module.__class__ = HashEncoding if isinstance(module, InferenceHashEncoding) else SceneContraction
    for alpha in (0.0, 1.0):
        plain = render_views(model, cameras, alpha, progress=False)
        assert all(torch.equal(fast[alpha][k], plain[k]) for k in plain)
        assert float(plain["accumulation"].max()) > 0.1  # the scene is not empty: the encodings were used


def test_loss_log_reads_back_the_per_step_numbers_and_finds_the_first_bad_step():
    history = {"total": []}
    log = LossLog(history, every=3)
    values = [torch.tensor(0.1 * i, dtype=torch.float32) for i in range(1, 6)]
    for step, v in enumerate(values, 1):
        log.add(step, total=v, part=v * 2, zero=0.0)
        if log.due(step):
            assert log.flush() is None
    assert len(history["total"]) == 3  # read back at step 3 only so far
    assert log.flush() is None
    assert history["total"] == [float(v) for v in values] and history["part"] == [float(v * 2) for v in values]
    assert history["zero"] == [0.0] * 5
    log.add(6, total=torch.tensor(1.0), part=torch.tensor(0.0), zero=0.0)
    log.add(7, total=torch.tensor(float("nan")), part=torch.tensor(0.0), zero=0.0)
    log.add(8, total=torch.tensor(float("inf")), part=torch.tensor(0.0), zero=0.0)
    step, name, value = log.flush()
    assert (step, name) == (7, "total") and value != value
