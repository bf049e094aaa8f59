"""Generator finetuning (pivotal-tuning style, paper Sec. 4 / Tab. 5) on the shipped 32 px face StyleGAN2.

The targets are the generator's own images at the pivot codes plus a detail it cannot produce there (a coloured
blob and a stripe), standing in for a captured subject that the pre-trained GAN only approximates. A working
finetune reproduces them clearly better than the frozen generator, leaves the given generator untouched, and
keeps edits working: moving the code along a principal direction of W still changes the image about as much as
with the frozen generator. (The random tiny fixture is not used here: its outputs reach +-7, far outside the
[-1, 1] image range, so a fidelity in image space says little about it.)
"""

from pathlib import Path

import pytest
import torch

from nerfeditor_ns.gan.checkpoints import load_generator
from nerfeditor_ns.gan.decomposition import latent_covariance, top_eigenpairs
from nerfeditor_ns.gan.generator_finetune import (
    GeneratorFinetuneConfig,
    finetune_generator,
    generate,
    generator_fidelity,
    load_finetuned_generator,
    locality_codes,
    save_finetuned_synthesis,
    synthesis_parameter_names,
)

FIXTURE = Path(__file__).parent / "data" / "face_gan32.pt"
STEPS = 40


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    G = load_generator(FIXTURE)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        pivots = G.mapping(torch.randn(4, G.z_dim, generator=g))
        base = G.synthesis(pivots)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blob = torch.exp(-((xs - 0.2) ** 2 + (ys + 0.1) ** 2) / 0.08)
    detail = torch.stack([0.8 * blob, -0.5 * blob, 0.3 * (xs.abs() < 0.1).float()])
    targets = (base + detail).clamp(-1, 1)
    cov = latent_covariance(G, n_samples=2000, seed=0)
    V, lam = top_eigenpairs(cov, 4)
    direction = (3.0 * lam[0].sqrt() * V[:, 0]).float()
    before = {k: v.detach().clone() for k, v in G.state_dict().items()}
    flags = {n: p.requires_grad for n, p in G.named_parameters()}
    result = finetune_generator(G, pivots, targets, GeneratorFinetuneConfig(steps=STEPS, lr=1e-3, batch_size=4),
                                progress=False)
    return G, pivots, targets, direction, result, before, flags


def test_finetuned_generator_reproduces_targets_better(setup):
    G, pivots, targets, _, result, _, _ = setup
    frozen = generator_fidelity(generate(G, pivots), targets)
    tuned = generator_fidelity(generate(result.generator, pivots), targets)
    assert tuned["psnr"] > frozen["psnr"] + 2.0, (frozen, tuned)
    assert tuned["ssim"] > frozen["ssim"], (frozen, tuned)
    rec = result.history["reconstruction"]
    assert sum(rec[-5:]) / 5 < 0.5 * rec[0]
    assert result.history["locality"][0] == 0.0 and result.history["locality"][-1] > 0 and result.radius > 0


def test_edited_code_still_changes_the_image(setup):
    G, pivots, _, direction, result, _, _ = setup
    T = result.generator
    frozen_change = (generate(G, pivots + direction) - generate(G, pivots)).abs().mean()
    tuned_change = (generate(T, pivots + direction) - generate(T, pivots)).abs().mean()
    assert float(frozen_change) > 0.05
    assert 0.6 < float(tuned_change / frozen_change) < 1.5, (float(frozen_change), float(tuned_change))


def test_given_generator_is_untouched_and_mapping_is_not_finetuned(setup):
    G, _, _, _, result, before, flags = setup
    after = G.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert {n: p.requires_grad for n, p in G.named_parameters()} == flags
    T = result.generator
    tuned = T.state_dict()
    names = synthesis_parameter_names(T)
    assert not any(n.startswith("mapping") for n in names)
    assert all(torch.equal(tuned[k], before[k]) for k in before if k.startswith("mapping") or k == "w_avg")
    assert any(not torch.equal(tuned[k], before[k]) for k in names)
    assert not any(p.requires_grad for p in T.parameters())


def test_locality_regulariser_keeps_outputs_away_from_the_pivots(setup):
    G, pivots, targets, _, with_locality, _, _ = setup
    without = finetune_generator(
        G, pivots, targets, GeneratorFinetuneConfig(steps=STEPS, lr=1e-3, batch_size=4, locality_weight=0.0),
        progress=False,
    )
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        samples = G.mapping(torch.randn(8, G.z_dim, generator=g))
    codes = locality_codes(pivots.repeat(2, 1, 1), samples, with_locality.radius)
    reference = generate(G, codes)
    drift_with = (generate(with_locality.generator, codes) - reference).abs().mean()
    drift_without = (generate(without.generator, codes) - reference).abs().mean()
    assert float(drift_with) < 0.8 * float(drift_without), (float(drift_with), float(drift_without))
    dist = (codes - pivots.repeat(2, 1, 1)).norm(dim=-1)
    assert torch.allclose(dist, torch.full_like(dist, with_locality.radius), rtol=1e-4)


def test_save_load_roundtrip_and_refusals(setup, tmp_path):
    G, pivots, targets, _, result, _, _ = setup
    path = save_finetuned_synthesis(result.generator, G, tmp_path / "g.pt")
    obj = torch.load(path, weights_only=True)
    assert set(obj["synthesis"]) == set(synthesis_parameter_names(G))
    loaded = load_finetuned_generator(G, path)
    assert torch.equal(generate(loaded, pivots), generate(result.generator, pivots))
    other = load_generator(FIXTURE)
    with torch.no_grad():
        other.mapping_weights[0].add_(0.01)
    with pytest.raises(ValueError, match="different generator"):
        load_finetuned_generator(other, path)
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a finetuned-generator file"):
        load_finetuned_generator(G, bad)


def test_zero_steps_is_the_unfinetuned_ablation_and_bad_settings_are_refused(setup):
    G, pivots, targets, _, _, _, _ = setup
    same = finetune_generator(G, pivots, targets, GeneratorFinetuneConfig(steps=0), progress=False)
    assert same.generator is not G
    assert torch.equal(generate(same.generator, pivots), generate(G, pivots))
    with pytest.raises(ValueError, match="steps"):
        finetune_generator(G, pivots, targets, GeneratorFinetuneConfig(steps=-1), progress=False)
    with pytest.raises(ValueError, match="codes"):
        finetune_generator(G, pivots[:, :2], targets, GeneratorFinetuneConfig(steps=1), progress=False)
