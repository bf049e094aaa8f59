"""Edit-fidelity metrics (fixed subject box / outside ring) against hand-computed answers.

All cases use 20 x 20 images. With the default regions (box x 0.30-0.70, y 0.25-0.70; ring 0.10 on left, right,
bottom; pixel centres): box = rows 5..13 x cols 6..13 (9 x 8 = 72 pixels); ring = cols 0,1,18,19 (all rows) plus
rows 18,19 x cols 2..17 (80 + 32 = 112 pixels); the top band adds rows 0,1 x cols 2..17 (32 pixels).
"""

from __future__ import annotations

import math

import pytest
import torch

from nerfeditor_ns.eval.fidelity import (
    ALIGNED_FACE_BOX,
    Regions,
    background_from_person,
    change_where,
    kept_psnr_where,
    domain_spread,
    fidelity_report,
    fraction_changed,
    kept_psnr_outside,
    reference_face_colour,
    subject_change,
    subject_colour,
    towards_reference,
)

S = 20
BOX = (slice(5, 14), slice(6, 14))


def _ring_by_hand(top: bool = False) -> torch.Tensor:
    m = torch.zeros(S, S, dtype=torch.bool)
    m[:, :2] = m[:, 18:] = True
    m[18:, :] = True
    if top:
        m[:2, :] = True
    return m


def test_region_masks_match_the_hand_count():
    box, ring = Regions().masks(S, S)
    expected_box = torch.zeros(S, S, dtype=torch.bool)
    expected_box[BOX] = True
    assert torch.equal(box, expected_box) and int(box.sum()) == 72
    assert torch.equal(ring, _ring_by_hand()) and int(ring.sum()) == 112
    _, ring_top = Regions(ring_top=True).masks(S, S)
    assert torch.equal(ring_top, _ring_by_hand(top=True)) and int(ring_top.sum()) == 144
    assert not bool((box & ring).any())


def test_kept_psnr_sees_only_the_ring():
    original = torch.full((3, S, S, 3), 0.5)
    edited = original.clone()
    edited[0][_ring_by_hand()] += 0.1  # MSE 0.01 on the ring -> 20 dB
    edited[1][_ring_by_hand()] += 0.01  # -> 40 dB
    edited[2][BOX] = 1.0  # a change inside the box only -> ring untouched -> 100 dB (MSE floor)
    edited[2][:2, 2:18] = 0.0  # and in the top band (cols 2..17), which is not part of the default ring
    kept = kept_psnr_outside(edited, original)
    assert kept.tolist() == pytest.approx([20.0, 40.0, 100.0], abs=1e-3)
    # with the top band in the ring, view 2's top rows (cols 2..17: 32 of 144 ring pixels, error 0.25) count
    kept_top = kept_psnr_outside(edited, original, Regions(ring_top=True))
    assert float(kept_top[2]) == pytest.approx(10 * math.log10(1 / (0.25 * 32 / 144)), abs=1e-3)


def test_subject_change_is_the_mean_abs_change_in_the_box():
    original = torch.zeros(2, S, S, 3)
    edited = original.clone()
    edited[0][BOX] = 0.5  # every box pixel, all channels
    edited[0][_ring_by_hand()] = 1.0  # outside the box: not counted
    box_rows = edited[1][BOX]  # [9, 8, 3] view
    box_rows[:, :4, 0] = 0.2  # half the box pixels, one channel -> 0.2 * 1/2 * 1/3
    edited[1][BOX] = box_rows
    change = subject_change(edited, original)
    assert change.tolist() == pytest.approx([0.5, 0.2 / 6], abs=1e-6)


def test_fraction_changed_counts_views_at_or_above_the_threshold():
    assert fraction_changed(torch.tensor([0.0, 0.029, 0.03, 0.5])) == pytest.approx(0.5)
    assert fraction_changed(torch.tensor([0.01, 0.02]), threshold=0.015) == pytest.approx(0.5)
    assert math.isnan(fraction_changed(torch.tensor([])))


def test_towards_reference_distances_by_hand():
    original = torch.zeros(3, S, S, 3)
    original[:, BOX[0], BOX[1]] = torch.tensor([0.6, 0.5, 0.4])
    edited = original.clone()
    edited[0][BOX] = torch.tensor([0.4, 0.3, 0.2])  # darker by 0.2: towards the darker reference
    edited[1][BOX] = torch.tensor([0.8, 0.7, 0.6])  # lighter: away from it
    edited[2][BOX] = torch.tensor([0.0, 0.0, 0.0])  # darker by 0.6/0.5/0.4: overshoots past twice the change needed
    assert subject_colour(original)[0].tolist() == pytest.approx([0.6, 0.5, 0.4], abs=1e-6)
    face, ref = torch.tensor([0.8, 0.6, 0.5]), torch.tensor([0.55, 0.35, 0.25])  # needs -0.25 per channel
    out = towards_reference(edited, original, ref, face)
    assert out["distance_before"] == pytest.approx(math.sqrt(3 * 0.25**2), abs=1e-5)
    # face + delta: (0.6, 0.4, 0.3) / (1.0, 0.8, 0.7) / (0.2, 0.1, 0.1)
    assert out["distance_after"] == pytest.approx(
        [math.sqrt(3 * 0.05**2), math.sqrt(3 * 0.45**2), math.sqrt(0.35**2 + 0.25**2 + 0.15**2)], abs=1e-5)
    assert out["closer"] == [True, False, False]
    assert out["fraction_closer"] == pytest.approx(1 / 3)
    # the box's own mean (0.6, 0.5, 0.4) is never compared with the reference face's: a face colour equal to the
    # reference means nothing can get closer
    assert towards_reference(edited, original, ref, ref)["closer"] == [False, False, False]


def test_reference_face_colour_reads_the_aligned_face_box():
    # ALIGNED_FACE_BOX (0.30, 0.35, 0.70, 0.80) on 20 px: cols 6..13, rows 7..15
    assert ALIGNED_FACE_BOX == (0.30, 0.35, 0.70, 0.80)
    image = torch.ones(S, S, 3)
    image[7:16, 6:14] = torch.tensor([0.2, 0.4, 0.6])
    assert reference_face_colour(image).tolist() == pytest.approx([0.2, 0.4, 0.6], abs=1e-6)
    image[6, 6:14] = 0.0  # one row above the box: not counted
    assert reference_face_colour(image).tolist() == pytest.approx([0.2, 0.4, 0.6], abs=1e-6)


def test_domain_spread_ratio():
    out = domain_spread(torch.tensor([0.1, 0.1, 0.1]), torch.tensor([0.04, 0.06]))
    assert out["mean_change_in_domain"] == pytest.approx(0.1)
    assert out["mean_change_out_of_domain"] == pytest.approx(0.05)
    assert out["ratio_out_to_in"] == pytest.approx(0.5)
    assert domain_spread(torch.zeros(3), torch.tensor([0.1]))["ratio_out_to_in"] is None
    assert domain_spread(torch.tensor([0.1]), None)["mean_change_out_of_domain"] is None


def test_report_of_a_null_and_a_real_edit():
    original = torch.rand(4, S, S, 3, generator=torch.Generator().manual_seed(0))
    null = fidelity_report(original.clone(), original)
    assert null["kept_psnr_outside"]["min"] == pytest.approx(100.0, abs=1e-3)
    assert null["fraction_changed"] == 0.0 and null["subject_change"]["max"] == 0.0
    edited = original.clone()
    edited[:3, BOX[0], BOX[1]] = (edited[:3, BOX[0], BOX[1]] * 0.5).clamp(0, 1)  # darken the subject in 3 views
    real = fidelity_report(edited, original, reference_colour=torch.zeros(3), subject_face_colour=torch.ones(3) * .5)
    assert real["num_views"] == 4 and real["fraction_changed"] == pytest.approx(0.75)
    assert real["kept_psnr_outside"]["min"] == pytest.approx(100.0, abs=1e-3)
    assert real["towards_reference"]["closer"] == [True, True, True, False]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="one shape"):
        subject_change(torch.zeros(1, S, S, 3), torch.zeros(1, S, S + 1, 3))
    with pytest.raises(ValueError, match="overlaps the outside ring"):
        Regions(subject=(0.05, 0.25, 0.7, 0.7))
    with pytest.raises(ValueError, match="0 <= x0 < x1"):
        Regions(subject=(0.7, 0.25, 0.3, 0.7))
    with pytest.raises(ValueError, match="select no pixel"):
        Regions().masks(1, 1)


def test_metrics_json_block_spread_over_domains():
    from nerfeditor_ns.eval.fidelity import edit_fidelity_metrics

    original = torch.full((3, S, S, 3), 0.5)
    edited = original.clone()
    edited[:, BOX[0], BOX[1]] += 0.2  # training views: subject change 0.2
    out_original = torch.full((2, S, S, 3), 0.5)
    out_edited = out_original.clone()
    out_edited[:, BOX[0], BOX[1]] += 0.05  # out-of-domain views: 0.05 -> ratio 0.25
    block = edit_fidelity_metrics(edited, original, out_edited, out_original)
    assert block["training_views"]["subject_change"]["mean"] == pytest.approx(0.2, abs=1e-6)
    assert block["training_views"]["fraction_changed"] == 1.0
    assert block["training_views"]["image_size"] == [S, S]
    assert block["out_of_domain_views"]["fraction_changed"] == 1.0
    assert block["spread"]["ratio_out_to_in"] == pytest.approx(0.25, abs=1e-5)
    assert block["regions"] == {"subject_box_xyxy": [0.30, 0.25, 0.70, 0.70], "ring": 0.10, "ring_top": False}
    no_out = edit_fidelity_metrics(edited, original)
    assert no_out["out_of_domain_views"] is None and no_out["spread"]["ratio_out_to_in"] is None
    assert "towards_reference" not in block["training_views"]
    # a reference edit: the subject got lighter by 0.2 (training) / 0.05 (out of domain); a paler reference face
    # (+0.1 from the subject's face colour) is approached in both groups, a darker one in neither
    face = torch.tensor([0.6, 0.5, 0.4])
    paler = edit_fidelity_metrics(edited, original, out_edited, out_original, face_colours=(face + 0.1, face))
    assert paler["training_views"]["towards_reference"]["fraction_closer"] == 1.0
    assert paler["out_of_domain_views"]["towards_reference"]["fraction_closer"] == 1.0
    darker = edit_fidelity_metrics(edited, original, out_edited, out_original, face_colours=(face - 0.1, face))
    assert darker["training_views"]["towards_reference"]["fraction_closer"] == 0.0


def test_metrics_scale_caps_the_longest_side():
    from nerfeditor_ns.eval.fidelity import metrics_scale

    assert metrics_scale(64, 64) == pytest.approx(0.5)  # 64 px -> 32 px
    assert metrics_scale(128, 96) == pytest.approx(0.25)
    assert metrics_scale(20, 30) == 1.0  # never upsampled
    with pytest.raises(ValueError, match="positive"):
        metrics_scale(0, 10)


def test_background_keeps_a_margin_from_the_person():
    person = torch.zeros(1, S, S)
    person[0, 8:12, 8:12] = 0.9  # a 4 x 4 person; margin 0.1 of 20 px = 2 px around it
    back = background_from_person(person, margin=0.1)
    assert not bool(back[0, 6:14, 6:14].any())  # the person and the 2 px band around it
    assert int(back[0].sum()) == S * S - 8 * 8
    assert bool(background_from_person(person * 0.4).all())  # below the threshold: no person at all


def test_kept_psnr_where_by_hand_and_nan_without_background():
    original = torch.zeros(2, S, S, 3)
    edited = original.clone()
    edited[:, :, :10] = 0.1  # left half changed by 0.1 (MSE 0.01 there)
    where = torch.zeros(2, S, S, dtype=torch.bool)
    where[0, :, :10] = True  # view 0: the changed half -> 20 dB
    where[1, :, 10:] = True  # view 1: the untouched half -> 100 dB (MSE floor)
    psnr = kept_psnr_where(edited, original, where)
    assert float(psnr[0]) == pytest.approx(20.0, abs=1e-4) and float(psnr[1]) == pytest.approx(100.0, abs=1e-4)
    none = kept_psnr_where(edited, original, torch.zeros(2, S, S, dtype=torch.bool))
    assert bool(torch.isnan(none).all())
    with pytest.raises(ValueError, match=r"must be \[N, H, W\]"):
        kept_psnr_where(edited, original, where[:1])


def test_change_where_averages_only_the_selected_pixels():
    original = torch.zeros(2, S, S, 3)
    edited = original.clone()
    edited[:, 5:14, 6:10] = 0.3  # half of the box changed by 0.3
    box = torch.zeros(S, S, dtype=torch.bool)
    box[5:14, 6:14] = True
    person = torch.zeros(2, S, S, dtype=torch.bool)
    person[0, 5:14, 6:10] = True  # view 0: the person is the changed half (wall in the other half)
    person[1] = box  # view 1: the whole box is the person
    got = change_where(edited, original, person)
    assert float(got[0]) == pytest.approx(0.3, abs=1e-6) and float(got[1]) == pytest.approx(0.15, abs=1e-6)
    assert float(subject_change(edited, original)[0]) == pytest.approx(0.15, abs=1e-6)  # the box alone dilutes
    assert bool(torch.isnan(change_where(edited, original, torch.zeros_like(person))).all())
