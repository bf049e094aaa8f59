"""Editing losses (paper Eqs. 2-5) on hand-made tensors with hand-computed values."""

import pytest
import torch

from nerfeditor_ns.nerf.losses import (
    background_density_loss,
    depth_smoothness_loss,
    original_density_loss,
    style_loss,
)


def test_style_loss_hand_values():
    pred = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    target = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 1.0]])
    # mask keeps ray 0 only: (1 - 0)^2 = 1 over 6 colour values
    assert style_loss(pred, target, torch.tensor([[1.0], [0.0]])).item() == pytest.approx(1.0 / 6.0)
    # both rays: 1 + (0.5^2 + 0.5^2) = 1.5 over 6 values
    assert style_loss(pred, target, torch.tensor([[1.0], [1.0]])).item() == pytest.approx(0.25)
    # background rays only: nothing counts
    assert style_loss(pred, target, torch.zeros(2, 1)).item() == 0.0


def test_style_loss_gradient_only_on_foreground():
    pred = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]], requires_grad=True)
    target = torch.zeros(2, 3)
    style_loss(pred, target, torch.tensor([[1.0], [0.0]])).backward()
    # d/dpred of mean((pred*M)^2) = 2 * pred * M / 6
    expected = torch.tensor([[2.0 / 6.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(pred.grad, expected)


def test_background_density_loss_hand_values():
    pred = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])  # [N=2, S=2, 1]
    ref = torch.tensor([[[1.0], [1.0]], [[0.0], [0.0]]])
    # ray 0 background (M=0): squares 0 and 1; ray 1 foreground: ignored. 1 / 4 samples
    assert background_density_loss(pred, ref, torch.tensor([[0.0], [1.0]])).item() == pytest.approx(0.25)
    # both background: 0 + 1 + 9 + 16 = 26 over 4 samples
    assert background_density_loss(pred, ref, torch.zeros(2, 1)).item() == pytest.approx(6.5)
    # soft mask 0.5 on ray 1 only: ray 1 squares scaled by 0.25 -> (9 + 16) * 0.25 = 6.25 over 4
    assert background_density_loss(pred, ref, torch.tensor([[1.0], [0.5]])).item() == pytest.approx(6.25 / 4)


def test_original_density_loss_hand_values():
    pred = torch.tensor([[[1.0], [2.0]]])
    ref = torch.tensor([[[0.0], [4.0]]])
    assert original_density_loss(pred, ref).item() == pytest.approx((1.0 + 4.0) / 2.0)
    assert original_density_loss(ref, ref).item() == 0.0


def test_depth_smoothness_hand_values():
    depth = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])  # P=1, S=2
    # horizontal (0-1)^2 + (2-4)^2 = 5, vertical (0-2)^2 + (1-4)^2 = 13; 18 over P*S*(S-1) = 2
    assert depth_smoothness_loss(depth).item() == pytest.approx(9.0)
    flat = torch.full((1, 2, 2), 3.0)
    assert depth_smoothness_loss(torch.cat([depth, flat])).item() == pytest.approx(18.0 / 4.0)
    ramp = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]])  # 6 vertical steps of 1
    assert depth_smoothness_loss(ramp).item() == pytest.approx(6.0 / 6.0)
    assert depth_smoothness_loss(ramp.transpose(1, 2)).item() == pytest.approx(1.0)


def test_depth_smoothness_gradient_direction():
    depth = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]], requires_grad=True)
    depth_smoothness_loss(depth).backward()
    # d/d d00 of [(d00-d01)^2 + (d00-d10)^2] / 2 = (d00-d01) + (d00-d10) = -1 - 2 = -3
    assert depth.grad[0, 0, 0].item() == pytest.approx(-3.0)
    # d11 = 4: (d11-d10) + (d11-d01) = 2 + 3 = 5
    assert depth.grad[0, 1, 1].item() == pytest.approx(5.0)


def test_empty_inputs_give_differentiable_zero():
    rgb = torch.zeros(0, 3, requires_grad=True)
    dens = torch.zeros(0, 8, 1, requires_grad=True)
    depth = torch.zeros(0, 4, 4, requires_grad=True)
    losses = [
        style_loss(rgb, torch.zeros(0, 3), torch.zeros(0, 1)),
        background_density_loss(dens, torch.zeros(0, 8, 1), torch.zeros(0, 1)),
        original_density_loss(dens, torch.zeros(0, 8, 1)),
        depth_smoothness_loss(depth),
    ]
    total = sum(losses)
    assert total.item() == 0.0 and torch.isfinite(total)
    total.backward()
    assert rgb.grad is not None and dens.grad is not None and depth.grad is not None


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="shapes differ"):
        style_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.ones(2, 1))
    with pytest.raises(ValueError, match="mask must have shape"):
        style_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"\[N, S, 1\]"):
        background_density_loss(torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"\[P, S, S\]"):
        depth_smoothness_loss(torch.zeros(2, 3, 4))
