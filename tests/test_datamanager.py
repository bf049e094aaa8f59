"""GuideSetDataManager on the small face capture (tests/data/face_small, 64 px, OPENCV cameras)."""

from pathlib import Path

import pytest
import torch

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from nerfeditor_ns.nerf.beta_codes import GUIDE_BETA_OFFSET
from nerfeditor_ns.nerf.datamanager import GuideSetDataManager, GuideSetDataManagerConfig
from nerfeditor_ns.nerf.guide_sets import GuideSet

SCENE = Path(__file__).parent / "data" / "face_small"
NUM_RAYS = 256
FRACTION = 0.5
PATCHES, SIDE = 2, 4


def _config(**overrides) -> GuideSetDataManagerConfig:
    kwargs = dict(
        dataparser=NerfstudioDataParserConfig(data=SCENE),
        train_num_rays_per_batch=NUM_RAYS,
        eval_num_rays_per_batch=NUM_RAYS,
        guide_ray_fraction=FRACTION,
        patches_per_batch=PATCHES,
        patch_size=SIDE,
        num_processes=0,
    )
    kwargs.update(overrides)
    return GuideSetDataManagerConfig(**kwargs)


@pytest.fixture(scope="module")
def shared_dm():
    torch.set_num_threads(1)
    return _config().setup(device="cpu")


@pytest.fixture
def dm(shared_dm):
    for gs in shared_dm.guide_sets:
        shared_dm.remove_guide_set(gs.name)
    torch.manual_seed(0)
    return shared_dm


def _guide_set(dm: GuideSetDataManager, name: str, image_ids, recolour, alpha: float, masks: bool) -> GuideSet:
    """A guide set made from the dataset's own images, recoloured, seen from shifted, undistorted cameras."""
    ids = torch.tensor(image_ids)
    train = dm.train_dataset.cameras
    c2w = train.camera_to_worlds[ids].clone()
    c2w[:, :, 3] += torch.tensor([0.05, -0.03, 0.02])
    cams = Cameras(
        camera_to_worlds=c2w,
        fx=train.fx[ids],
        fy=train.fy[ids],
        cx=train.cx[ids],
        cy=train.cy[ids],
        width=train.width[ids],
        height=train.height[ids],
        camera_type=train.camera_type[ids],
    )
    images = torch.stack([recolour(dm.train_dataset[int(i)]["image"][..., :3]) for i in ids])
    mask = None
    if masks:
        mask = torch.zeros(*images.shape[:3], 1)
        mask[:, :, 32:] = 1.0  # right half is "foreground"
    return GuideSet(name, images, cams, alpha, mask)


def _two_sets(dm):
    a = _guide_set(dm, "in_domain", [0, 3, 5, 7], lambda im: 1.0 - im, 1.0, masks=True)
    b = _guide_set(dm, "out_domain", [10, 20], lambda im: im[..., [2, 0, 1]], 0.5, masks=False)
    assert dm.add_guide_set(a) == 1 and dm.add_guide_set(b) == 2
    return a, b


def _check_rays(dm: GuideSetDataManager, bundle, batch) -> None:
    """Every ray's colour, mask, set, alpha and beta index against the image it came from."""
    idx = batch["indices"]
    set_index = batch["set_index"]
    beta = bundle.metadata["beta_index"][:, 0]
    assert bundle.metadata["beta_index"].dtype == torch.int64
    assert torch.equal(bundle.metadata["alpha"], batch["alpha"])
    assert torch.equal(bundle.camera_indices[:, 0], beta)
    orig = set_index == 0
    assert torch.equal(beta[orig], idx[orig, 0])
    assert torch.all(batch["alpha"][orig] == 0) and torch.all(batch["mask"][orig] == 1)
    for n in torch.nonzero(orig)[:40, 0].tolist():  # original colours are the dataset's pixels
        c, y, x = idx[n].tolist()
        assert torch.equal(batch["image"][n], dm.train_dataset[c]["image"][y, x, :3])
    for s, gs in enumerate(dm.guide_sets, start=1):
        sel = set_index == s
        start, count = dm.guide_beta_range(gs.name)
        img = beta[sel] - start
        assert torch.all((img >= 0) & (img < count))
        y, x = idx[sel, 1], idx[sel, 2]
        assert torch.equal(idx[sel, 0], beta[sel])
        assert torch.equal(batch["image"][sel], gs.images[img, y, x])
        expected_mask = gs.masks[img, y, x] if gs.masks is not None else torch.ones(int(sel.sum()), 1)
        assert torch.equal(batch["mask"][sel], expected_mask)
        assert torch.all(batch["alpha"][sel] == gs.alpha)


def test_plain_batches_match_nerfstudio_layout(dm):
    bundle, batch = dm.next_train(0)
    assert len(bundle) == NUM_RAYS and batch["image"].shape == (NUM_RAYS, 3)
    assert batch["mask"].shape == (NUM_RAYS, 1) and batch["alpha"].shape == (NUM_RAYS, 1)
    assert torch.all(batch["set_index"] == 0) and "patch_shape" not in batch
    assert batch["ray_counts"] == {"original": NUM_RAYS, "guide": 0, "patch": 0}
    assert set(bundle.metadata) == {"directions_norm", "alpha", "beta_index"}
    assert int(batch["indices"][:, 0].max()) < len(dm.train_dataset)
    _check_rays(dm, bundle, batch)
    # rays are the training cameras' own: origin = camera centre of the indexed image
    centres = dm.train_dataset.cameras.camera_to_worlds[batch["indices"][:, 0], :, 3]
    assert torch.allclose(bundle.origins, centres, atol=1e-5)


def test_eval_mode_batches_are_unconditioned_original_rays(dm):
    """nerfstudio's exporters sample through next_train with the pipeline in eval mode: no guide rays, no alpha /
    beta keys (the model then uses its own default alpha and appearance)."""
    _two_sets(dm)
    dm.eval()
    try:
        bundle, batch = dm.next_train(0)
    finally:
        dm.train()
    assert len(bundle) == NUM_RAYS and batch["ray_counts"] == {"original": NUM_RAYS, "guide": 0, "patch": 0}
    assert set(bundle.metadata) == {"directions_norm"} and "set_index" not in batch
    centres = dm.train_dataset.cameras.camera_to_worlds[batch["indices"][:, 0], :, 3]
    assert torch.allclose(bundle.origins, centres, atol=1e-5)  # the training cameras' own rays
    # back in training mode the guide rays are mixed in again
    assert dm.next_train(1)[1]["ray_counts"]["guide"] > 0


def test_guide_fraction_and_per_ray_values(dm):
    _two_sets(dm)
    num_guide = round(FRACTION * NUM_RAYS)
    per_set = torch.zeros(3, dtype=torch.long)
    for step in range(6):
        bundle, batch = dm.next_train(step)
        assert len(bundle) == NUM_RAYS and all(v.shape[0] == NUM_RAYS for v in bundle.metadata.values())
        assert int((batch["set_index"] > 0).sum()) == num_guide  # exact per batch
        assert batch["ray_counts"] == {
            "original": NUM_RAYS - num_guide,
            "guide": num_guide - PATCHES * SIDE**2,
            "patch": PATCHES * SIDE**2,
        }
        assert batch["patch_shape"] == (PATCHES, SIDE)
        assert torch.all(batch["set_index"][-PATCHES * SIDE**2 :] > 0)
        _check_rays(dm, bundle, batch)
        uniform = batch["set_index"][NUM_RAYS - num_guide : NUM_RAYS - PATCHES * SIDE**2]
        per_set += torch.bincount(uniform, minlength=3)
    # uniform over guide pixels: set 1 has 4 images, set 2 has 2 -> about 2:1 (expected 384 of 576; sd ~11)
    assert per_set[0] == 0 and abs(int(per_set[1]) - 384) < 50


def test_all_guide_batches_have_no_original_ray(dm):
    """guide_ray_fraction = 1 (ns-edit's finetune with the original frozen): every ray is a guide ray."""
    _two_sets(dm)
    old, dm.config.guide_ray_fraction = dm.config.guide_ray_fraction, 1.0
    try:
        bundle, batch = dm.next_train(0)
    finally:
        dm.config.guide_ray_fraction = old
    assert len(bundle) == NUM_RAYS and batch["ray_counts"]["original"] == 0
    assert bool((batch["set_index"] > 0).all()) and bool((batch["alpha"] > 0).all())
    _check_rays(dm, bundle, batch)


def test_guide_rays_come_from_their_own_cameras(dm):
    _two_sets(dm)
    bundle, batch = dm.next_train(0)
    for s, gs in enumerate(dm.guide_sets, start=1):
        sel = batch["set_index"] == s
        img = batch["indices"][sel, 0] - dm.guide_beta_range(gs.name)[0]
        c2w = gs.cameras.camera_to_worlds[img]
        assert torch.allclose(bundle.origins[sel], c2w[:, :, 3], atol=1e-5)
        # project origin + direction back through the pinhole camera: lands on the pixel centre
        cam_dir = torch.einsum("nji,nj->ni", c2w[:, :, :3], bundle.directions[sel])
        depth = -cam_dir[:, 2]
        u = gs.cameras.cx[img, 0] + gs.cameras.fx[img, 0] * cam_dir[:, 0] / depth
        v = gs.cameras.cy[img, 0] - gs.cameras.fy[img, 0] * cam_dir[:, 1] / depth
        assert torch.allclose(u, batch["indices"][sel, 2].float() + 0.5, atol=1e-3)
        assert torch.allclose(v, batch["indices"][sel, 1].float() + 0.5, atol=1e-3)


def test_patches_are_contiguous_row_major_squares(dm):
    _two_sets(dm)
    for step in range(3):
        _, batch = dm.next_train(step)
        patch = batch["indices"][-PATCHES * SIDE**2 :].reshape(PATCHES, SIDE, SIDE, 3)
        sets = batch["set_index"][-PATCHES * SIDE**2 :].reshape(PATCHES, SIDE, SIDE)
        for p in range(PATCHES):
            assert torch.all(patch[p, :, :, 0] == patch[p, 0, 0, 0])  # one image
            assert torch.all(sets[p] == sets[p, 0, 0])
            rows, cols = patch[p, :, :, 1], patch[p, :, :, 2]
            ar = torch.arange(SIDE)
            assert torch.equal(rows, rows[0, 0] + ar[:, None].expand(SIDE, SIDE))
            assert torch.equal(cols, cols[0, 0] + ar[None, :].expand(SIDE, SIDE))
            assert int(rows.max()) < 64 and int(cols.max()) < 64


def test_replace_and_remove_between_steps(dm):
    a, b = _two_sets(dm)
    dm.next_train(0)
    old_start, _ = dm.guide_beta_range("in_domain")
    assert old_start >= GUIDE_BETA_OFFSET and dm.guide_beta_range("out_domain")[0] == old_start + 4
    new_a = _guide_set(dm, "in_domain", [1, 2], lambda im: im * 0.5, 1.0, masks=False)
    assert dm.replace_guide_set(new_a) == 1
    start, count = dm.guide_beta_range("in_domain")
    assert count == 2 and start >= old_start + 4 + 2  # fresh indices, after every index handed out so far
    bundle, batch = dm.next_train(1)
    _check_rays(dm, bundle, batch)  # set 1 rays now carry the new images (halved colours, no mask)
    assert torch.all(batch["mask"][batch["set_index"] == 1] == 1)

    dm.remove_guide_set("in_domain")
    assert [g.name for g in dm.guide_sets] == ["out_domain"]
    bundle, batch = dm.next_train(2)
    _check_rays(dm, bundle, batch)
    assert set(batch["set_index"].tolist()) == {0, 1}
    assert torch.all(batch["alpha"][batch["set_index"] == 1] == 0.5)

    dm.remove_guide_set("out_domain")
    _, batch = dm.next_train(3)
    assert torch.all(batch["set_index"] == 0) and "patch_shape" not in batch

    with pytest.raises(KeyError, match="No guide set named 'nope'"):
        dm.remove_guide_set("nope")
    dm.add_guide_set(b)
    with pytest.raises(ValueError, match="replace_guide_set"):
        dm.add_guide_set(b)


def test_save_and_reload_through_guide_sets_dir(dm, tmp_path):
    _two_sets(dm)
    dm.save_guide_sets(tmp_path / "guides")
    dm2 = _config(guide_sets_dir=tmp_path / "guides").setup(device="cpu")
    assert [g.name for g in dm2.guide_sets] == ["in_domain", "out_domain"]
    for g1, g2 in zip(dm.guide_sets, dm2.guide_sets):
        assert g1.alpha == g2.alpha and dm.guide_beta_range(g1.name) == dm2.guide_beta_range(g2.name)
        assert torch.allclose(g1.images, g2.images, atol=1e-6)
        assert torch.equal(g1.cameras.camera_to_worlds, g2.cameras.camera_to_worlds)
        assert (g1.masks is None) == (g2.masks is None)
    bundle, batch = dm2.next_train(0)
    _check_rays(dm2, bundle, batch)
    # a set added after reloading continues after the reloaded indices
    dm2.add_guide_set(_guide_set(dm2, "extra", [4], lambda im: im, 1.0, masks=False))
    start_b, count_b = dm.guide_beta_range("out_domain")
    assert dm2.guide_beta_range("extra")[0] == start_b + count_b


def test_user_errors_are_clear(dm, tmp_path):
    with pytest.raises(ValueError, match="patches-per-batch"):  # 1024 patch rays > 128 guide rays
        GuideSetDataManager(_config(patches_per_batch=16, patch_size=8))
    with pytest.raises(ValueError, match="guide_ray_fraction"):
        GuideSetDataManager(_config(guide_ray_fraction=1.5))
    with pytest.raises(FileNotFoundError, match="guide-sets-dir"):
        _config(guide_sets_dir=tmp_path / "missing").setup(device="cpu")
    small = _guide_set(dm, "tiny", [0], lambda im: im, 1.0, masks=False)
    tiny = GuideSet("tiny", small.images[:, :3, :3], _rescaled(small.cameras, 3), 1.0)
    with pytest.raises(ValueError, match="patch-size"):
        dm.add_guide_set(tiny)
    with pytest.raises(TypeError, match="GuideSet"):
        dm.add_guide_set("not a set")  # type: ignore[arg-type]


def _rescaled(cameras: Cameras, size: int) -> Cameras:
    cams = Cameras(
        camera_to_worlds=cameras.camera_to_worlds,
        fx=cameras.fx,
        fy=cameras.fy,
        cx=cameras.cx,
        cy=cameras.cy,
        width=torch.full_like(cameras.width, size),
        height=torch.full_like(cameras.height, size),
    )
    return cams


def test_worker_process_path():
    """The default path: original rays from nerfacto's worker process, guide rays in this process."""
    dm = _config(num_processes=1).setup(device="cpu")
    try:
        _, batch = dm.next_train(0)
        assert torch.all(batch["set_index"] == 0) and batch["image"].shape == (NUM_RAYS, 3)
        _two_sets(dm)
        bundle, batch = dm.next_train(1)
        assert int((batch["set_index"] > 0).sum()) == round(FRACTION * NUM_RAYS)
        _check_rays(dm, bundle, batch)
    finally:
        for proc in dm.data_procs:
            proc.terminate()
            proc.join()
