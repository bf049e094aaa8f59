"""Latent code adjustor (paper Sec. 3.2, Fig. 3, Eq. 1).

Given a target pose ``(theta, phi)``, a lightweight classifier **C** picks the view-related coordinates of the
orthonormal basis ``V`` of W (from the decomposition node **D**, :mod:`nerfeditor_ns.gan.decomposition`) and a
lightweight regressor **R** their strengths::

    k = sigmoid(C(theta, phi)),   d = R(theta, phi),   w' = w + V (k * d),   I = G(w').

Trained on (image, pose) pairs rendered by the NeRF with ``L_2 + L_vgg + L_id + L_reg`` (Eq. 1), ``L_reg`` the
entropy of ``k`` as a distribution over the coordinates, which keeps few of them selected
(:func:`selection_entropy`). :func:`train_adjustor` is the training loop; :meth:`LatentCodeAdjustor.generate`
renders ``G(w')`` for any poses (the in-domain guide set of Sec. 3.2 uses it with the edited code ``w_style``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from nerfeditor_ns.gan.decomposition import StyleDecomposition, latent_covariance
from nerfeditor_ns.gan.losses import LossFn, reconstruction_terms

__all__ = [
    "LatentCodeAdjustorConfig",
    "LatentCodeAdjustor",
    "AdjustorTrainResult",
    "pose_encoding",
    "selection_entropy",
    "train_adjustor",
]


def pose_encoding(poses: Float[Tensor, "N 2"], num_frequencies: int) -> Float[Tensor, "N E"]:
    """``[theta, phi, sin(2^f theta), cos(2^f theta), sin(2^f phi), cos(2^f phi)]`` for f < num_frequencies.

    Angles in radians. Output size ``2 + 4 * num_frequencies``.
    """
    feats = [poses]
    for f in range(num_frequencies):
        scaled = poses * (2.0**f)
        feats += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(feats, dim=-1)


def selection_entropy(k: Float[Tensor, "*batch k"], eps: float = 1e-8) -> Float[Tensor, ""]:
    """Eq. 1's ``L_reg``, "an entropy regularization term to encourage k to be sparse, as only few coordinates are
    view-related": the entropy of ``k`` normalised to a distribution over the coordinates,

        p = k / sum_i k_i,   H(p) = -sum_i p_i log p_i / log(num coordinates)   (in [0, 1]),

    averaged over the poses. It is 0 when one coordinate carries all of ``k`` and 1 when every coordinate is equally
    active, so it prefers few selected coordinates. (A per-coordinate binary entropy would be 0 with every k at 1.)
    """
    n = k.shape[-1]
    if n < 2:
        return k.sum() * 0.0
    p = k / k.sum(dim=-1, keepdim=True).clamp_min(eps)
    return (-(p * torch.log(p.clamp_min(eps))).sum(dim=-1) / math.log(n)).mean()


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    mods: List[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.SiLU()]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


@dataclass
class LatentCodeAdjustorConfig(InstantiateConfig):
    """Latent code adjustor **A** (C, R) and its decomposition node **D** (Sec. 3.2)."""

    _target: Type = field(default_factory=lambda: LatentCodeAdjustor)
    num_components: int = 32
    """k: number of basis vectors of V (top eigenvectors of the covariance of W)."""
    covariance_samples: int = 10_000
    """Number of mapped z samples for the covariance of W (Eq. 7)."""
    seed: int = 0
    """Seed of those samples and of the initialisation of C and R."""
    differentiable: bool = True
    """Recompute V every step through the DDN backward and train the decomposition with the adjustor (paper);
    False = "w/o differentiable" ablation of Sec. 4.4 (V fixed, no gradient)."""
    hidden_dim: int = 64
    """Width of the C and R MLPs."""
    num_hidden_layers: int = 2
    """Hidden layers of the C and R MLPs."""
    num_frequencies: int = 2
    """sin/cos frequencies of the pose encoding (angles in radians)."""
    layer_range: Optional[Tuple[int, int]] = None
    """Rows ``[start, end)`` of ws that receive the offset ``V (k * d)``; None = every row. The paper adjusts the
    single W code, i.e. every row of ws, and V is a basis of W (not W+), so all rows is the faithful default.
    Restricting to the coarse rows (e.g. ``(0, G.style_start(32))``) keeps deep-layer style untouched by the pose
    adjustment, at the price of departing from the paper."""
    min_gap: float = 1e-6
    """Eigen-gap clamp of the DDN backward, relative to the largest variance of W."""


class LatentCodeAdjustor(nn.Module):
    """``w' = w + V (k * d)`` with ``k = sigmoid(C(theta, phi))`` and ``d = R(theta, phi)`` (Sec. 3.2).

    ``d`` is expressed in units of each component's standard deviation ``sqrt(l_i)`` of W (``V`` has unit
    columns while the spread of W differs by orders of magnitude between components); this is a fixed rescaling
    of R's output that keeps it O(1) for every component, not a change of the model.

    R's last layer starts at zero, so an untrained adjustor returns ``w`` unchanged and ``k = sigmoid(C)``
    starts near 0.5 for every coordinate (near the maximum of L_reg).

    Args:
        config: the settings.
        generator: the StyleGAN2 whose mapping network defines W (sampled once for the covariance).
        covariance: a precomputed covariance of W (then ``generator`` may be None).
    """

    def __init__(
        self,
        config: LatentCodeAdjustorConfig,
        generator: Optional[nn.Module] = None,
        covariance: Optional[Float[Tensor, "D D"]] = None,
    ) -> None:
        super().__init__()
        self.config = config
        if covariance is None:
            if generator is None:
                raise ValueError("LatentCodeAdjustor needs the generator (to sample W) or a precomputed covariance=.")
            covariance = latent_covariance(generator, n_samples=config.covariance_samples, seed=config.seed)
        self.decomposition = StyleDecomposition(
            k=config.num_components,
            learnable=config.differentiable,
            covariance=covariance,
            min_gap=config.min_gap,
        )
        enc_dim = 2 + 4 * config.num_frequencies
        k = config.num_components
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # deterministic initialisation, independent of the global RNG
            self.classifier = _mlp(enc_dim, config.hidden_dim, config.num_hidden_layers, k)  # C
            self.regressor = _mlp(enc_dim, config.hidden_dim, config.num_hidden_layers, k)  # R
        nn.init.zeros_(self.regressor[-1].weight)
        nn.init.zeros_(self.regressor[-1].bias)
        nn.init.zeros_(self.classifier[-1].bias)

    @property
    def w_dim(self) -> int:
        return self.decomposition.w_dim

    def basis(self) -> Tuple[Float[Tensor, "D k"], Float[Tensor, "k"]]:
        """``(V, eigenvalues)`` from the decomposition node (float64)."""
        return self.decomposition()

    def coordinates(self, poses: Float[Tensor, "N 2"]) -> Tuple[Float[Tensor, "N k"], Float[Tensor, "N k"]]:
        """``(k, d)`` for the poses ``[N, 2] = (theta, phi)`` in radians; ``d`` in units of sqrt(eigenvalue)."""
        if poses.ndim != 2 or poses.shape[1] != 2:
            raise ValueError(f"poses must be [N, 2] = (theta, phi) in radians, got shape {tuple(poses.shape)}.")
        enc = pose_encoding(poses.to(torch.float32), self.config.num_frequencies)
        return torch.sigmoid(self.classifier(enc)), self.regressor(enc)

    def offsets(
        self, poses: Float[Tensor, "N 2"]
    ) -> Tuple[Float[Tensor, "N D"], Float[Tensor, "N k"], Float[Tensor, "N k"]]:
        """``(V (k * d), k, d)`` for every pose."""
        k, d = self.coordinates(poses)
        vectors, values = self.basis()
        std = values.detach().clamp_min(0).sqrt().to(k.dtype)
        coeff = k * d * std
        return coeff @ vectors.to(coeff.dtype).transpose(0, 1), k, d

    def forward(
        self, w: Union[Float[Tensor, "D"], Float[Tensor, "num_ws D"], Float[Tensor, "B num_ws D"]], poses: Tensor
    ) -> Tuple[Float[Tensor, "N num_ws D"], Float[Tensor, "N k"]]:
        """Adjusted codes ``w' = w + V (k * d)`` for every pose, and ``k``.

        ``w`` is one code (``[D]``, ``[num_ws, D]`` or ``[1, num_ws, D]``), used for every pose, or one code per
        pose (``[N, num_ws, D]``). A ``[D]`` code is broadcast to a single row; pass ``[num_ws, D]`` for the
        generator.
        """
        ws = _as_ws(w, self.w_dim)
        offset, k, _ = self.offsets(poses)
        n = poses.shape[0]
        if ws.shape[0] not in (1, n):
            raise ValueError(f"w has {ws.shape[0]} codes but {n} poses were given; pass one code or one per pose.")
        ws = ws.expand(n, -1, -1)
        start, end = self._rows(ws.shape[1])
        row_mask = torch.zeros(ws.shape[1], 1, dtype=ws.dtype, device=ws.device)
        row_mask[start:end] = 1.0
        return ws + row_mask * offset.to(ws.dtype)[:, None, :], k

    def _rows(self, num_ws: int) -> Tuple[int, int]:
        if self.config.layer_range is None:
            return 0, num_ws
        start, end = self.config.layer_range
        if not 0 <= start < end <= num_ws:
            raise ValueError(
                f"layer_range {self.config.layer_range} is not a valid [start, end) row range of ws with {num_ws} rows."
            )
        return start, end

    def generate(
        self,
        generator: nn.Module,
        w: Tensor,
        poses: Float[Tensor, "N 2"],
        batch_size: int = 8,
        noise_mode: str = "const",
    ) -> Float[Tensor, "N 3 H W"]:
        """Images ``G(w + V (k * d))`` for the poses, in [-1, 1], without gradients (batched)."""
        ws_all = _broadcast_rows(_as_ws(w, self.w_dim), generator)
        outs = []
        # no_grad, not inference_mode: the decomposition caches its basis on first use, and training may reuse it
        with torch.no_grad():
            for start in range(0, poses.shape[0], batch_size):
                chunk = poses[start : start + batch_size]
                w_chunk = ws_all if ws_all.shape[0] == 1 else ws_all[start : start + batch_size]
                ws, _ = self(w_chunk, chunk)
                outs.append(generator.synthesis(ws, noise_mode=noise_mode))
        return torch.cat(outs, dim=0)


def _broadcast_rows(ws: Tensor, generator: nn.Module) -> Tensor:
    """A single-row code ``[B, 1, D]`` is repeated to the generator's ``num_ws`` rows."""
    num_ws = int(getattr(generator, "num_ws", ws.shape[1]))
    if ws.shape[1] == 1 and num_ws > 1:
        return ws.expand(-1, num_ws, -1)
    if ws.shape[1] != num_ws:
        raise ValueError(f"latent code has {ws.shape[1]} rows, the generator takes num_ws={num_ws}.")
    return ws


def _as_ws(w: Tensor, w_dim: int) -> Tensor:
    if w.shape[-1] != w_dim:
        raise ValueError(f"latent code has last dimension {w.shape[-1]}, the generator's w_dim is {w_dim}.")
    if w.ndim == 1:
        return w[None, None]
    if w.ndim == 2:
        return w[None]
    if w.ndim == 3:
        return w
    raise ValueError(f"latent code must be [w_dim], [num_ws, w_dim] or [B, num_ws, w_dim]; got {tuple(w.shape)}.")


@dataclass
class AdjustorTrainResult:
    """What :func:`train_adjustor` returns."""

    adjustor: LatentCodeAdjustor
    """The trained adjustor (eval mode)."""
    history: Dict[str, List[float]]
    """Per-step values of ``total``, ``reconstruction``, ``entropy`` (and each reconstruction term)."""




def _check_pairs(images: Tensor, poses: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}.")
    if poses.ndim != 2 or poses.shape[1] != 2:
        raise ValueError(f"poses must be [N, 2] = (theta, phi) in radians, got shape {tuple(poses.shape)}.")
    if images.shape[0] != poses.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {poses.shape[0]} poses; give one pose per image.")
    hi = float(images.max())
    if hi > 20.0:
        # Generator outputs may overshoot [-1, 1] a little; values this large mean an 8-bit image.
        raise ValueError(
            f"images reach {hi:.3g}: they look like [0, 255] pixels; the adjustor expects [-1, 1] "
            "(convert with img / 127.5 - 1, or img * 2 - 1 from [0, 1])."
        )


def train_adjustor(
    generator: nn.Module,
    w_frontal: Tensor,
    images: Float[Tensor, "N 3 H W"],
    poses: Float[Tensor, "N 2"],
    steps: int = 1000,
    *,
    loss: Optional[LossFn] = None,
    entropy_weight: float = 0.01,
    adjustor: Optional[LatentCodeAdjustor] = None,
    config: Optional[LatentCodeAdjustorConfig] = None,
    lr: float = 1e-3,
    basis_lr: float = 1e-5,
    batch_size: int = 4,
    noise_mode: str = "const",
    seed: int = 0,
    progress: bool = True,
    log_every: int = 10,
) -> AdjustorTrainResult:
    """Trains the latent code adjustor on (image, pose) pairs with Eq. 1.

    ``L_total = reconstruction(G(w'), I) + entropy_weight * H(k)``, where ``reconstruction`` is
    ``L_2 + L_vgg + L_id``: pass a :class:`nerfeditor_ns.gan.losses.ReconstructionLoss` (returns a dict with
    ``"total"``; its VGG / ArcFace terms are active when their weight files were given) or any callable
    ``(pred, target) -> loss``; the default is the L2 term alone. ``H(k)`` is :func:`selection_entropy` (L_reg).

    The generator stays frozen; C, R (learning rate ``lr``) and, when ``config.differentiable``, the
    decomposition's transform (``basis_lr``) are trained. Generated images are resized to the targets' size
    when the two differ.

    Args:
        generator: StyleGAN2 (``load_generator``).
        w_frontal: the inverted frontal code ``[num_ws, w_dim]`` (or ``[1, num_ws, w_dim]``).
        images: target views ``[N, 3, H, W]`` in [-1, 1] (the NeRF's in-domain renders).
        poses: ``[N, 2]`` = (theta, phi) of each image, radians, relative to the frontal view.
        steps: optimisation steps.
        loss: reconstruction loss (see above).
        entropy_weight: weight of L_reg (the entropy regulariser on k); 0 = none.
        adjustor: continue training this adjustor; otherwise one is built from ``config`` and the generator.
        config: settings for a new adjustor (default :class:`LatentCodeAdjustorConfig`).
        lr: Adam learning rate of C and R.
        basis_lr: Adam learning rate of the decomposition's transform (differentiable mode). Adam moves every
            entry of the [w_dim, w_dim] transform by about this much per step, so keep it small.
        batch_size: pairs per step.
        noise_mode: the generator's noise mode.
        seed: seed of the minibatch sampling.
        progress: show a rich progress bar with the running loss.
        log_every: steps between reading the losses back (the progress bar and the finite-loss check; not every
            step, so a GPU is not made to wait each step).
    """
    _check_pairs(images, poses)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    device = next(generator.parameters()).device
    generator.requires_grad_(False)
    if adjustor is None:
        adjustor = LatentCodeAdjustor(config or LatentCodeAdjustorConfig(), generator=generator)
    adjustor = adjustor.to(device)
    w_frontal = _broadcast_rows(_as_ws(w_frontal.detach().to(device), adjustor.w_dim), generator)
    if w_frontal.shape[0] != 1:
        raise ValueError(f"w_frontal must be one code [num_ws, w_dim], got {w_frontal.shape[0]} codes.")
    images = images.to(device)
    poses = poses.to(device)

    groups = [{"params": list(adjustor.classifier.parameters()) + list(adjustor.regressor.parameters()), "lr": lr}]
    if adjustor.decomposition.transform is not None:
        groups.append({"params": [adjustor.decomposition.transform], "lr": basis_lr})
    optimizer = torch.optim.Adam(groups)
    rng = torch.Generator().manual_seed(seed)
    history: Dict[str, List[float]] = {"total": [], "reconstruction": [], "entropy": []}
    n = images.shape[0]

    from nerfeditor_ns.io_utils import progress_bar

    from nerfeditor_ns.gan.loss_log import LossLog

    log = LossLog(history, log_every)
    bar = progress_bar("latent code adjustor", enabled=progress)
    adjustor.train()
    with bar:
        task = bar.add_task("", total=steps)
        for step in range(1, steps + 1):
            idx = torch.randperm(n, generator=rng)[: min(batch_size, n)].to(device)
            ws, k = adjustor(w_frontal, poses[idx])
            pred = generator.synthesis(ws, noise_mode=noise_mode)
            target = images[idx]
            if pred.shape[-2:] != target.shape[-2:]:
                pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            terms = reconstruction_terms(loss, pred, target)
            entropy = selection_entropy(k)  # L_reg of Eq. 1
            total = terms["total"] + entropy_weight * entropy  # Eq. 1
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            # read back every log_every steps, not every step (no host sync per step on a GPU)
            log.add(step, total=total, reconstruction=terms["total"], entropy=entropy,
                    **{name: value for name, value in terms.items() if name != "total"})
            if log.due(step) or step == steps:
                bad = log.flush()
                if bad is not None:
                    raise FloatingPointError(
                        f"adjustor loss became {bad[2]} at step {bad[0]}; lower lr / basis_lr, or set "
                        "differentiable=False if the W spectrum has near-equal eigenvalues among the top components."
                    )
                recent = history["total"][-max(1, log_every) :]
                bar.update(task, completed=step, description=f"loss {sum(recent) / len(recent):.4f}")
    adjustor.eval()
    return AdjustorTrainResult(adjustor=adjustor, history=history)

