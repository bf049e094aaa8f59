"""Conditional NeRF field of NeRFEditor (paper Sec. 3.1, App. A) as a gated residual on nerfacto's field.

The paper conditions one density head and one colour head on a style code alpha and an appearance code beta:

    F_dens : (E_style(alpha), E_app(beta), H(x))        -> (f_geo, sigma)
    F_color: (E_style(alpha), E_app(beta), R(v), f_geo) -> c

Here each head is split into nerfacto's head (the original scene) plus a gated, zero-initialised residual:

    s(x)   = F_dens^0(H(x))                     + g(alpha) * F_dens^D(E_style(alpha), E_app^D(beta), H(x))
    l(x,v) = F_color^0(R(v), f_geo, E_app^0(i)) + g(alpha) * F_color^D(E_style(alpha), E_app^D(beta), R(v), f_geo, f^D)
    sigma  = trunc_exp(s) (nerfacto's activation),   c = sigmoid(l)

with g(alpha) = alpha (g(0) = 0, g(1) = 1: the viewer's slider blends), times the soft indicator r(x) of the edit
region when an edit sets one (:mod:`nerfeditor_ns.nerf.edit_region`: outside the subject's box the residual is not
evaluated, so the edited scene is the original there by construction). ``s`` and ``l`` are pre-activations
(density logit, colour logits); ``f^D`` is a feature of the residual density head passed to the residual colour head.
Any function of the paper's form is still representable (for alpha > 0 the residual is free), but this form
guarantees what the edit needs:

- at alpha = 0 the field IS nerfacto's field (its own modules, built by ``NerfactoField.__init__``), with nerfacto's
  per-image appearance embedding E_app^0 (a table: E_app applied to a one-hot beta); the residual is not evaluated at
  all when no sample has alpha != 0, and only on the samples with alpha != 0 otherwise;
- the residual heads' last layers start at zero, so before finetuning alpha = 1 renders exactly the alpha = 0 scene.

Appearance: guide images are renders of the original at the AVERAGE appearance, so for any beta index that is not a
training image (the average index -1 and every guide index) the base uses nerfacto's average embedding; a guide
image's own beta (the paper's per-guide code, absorbing guide inconsistencies) enters only the residual, through
E_app^D = MLP(beta_code(index)). Rays without a guide index (views, eval) give the residual the mean of E_app^D over
the guide codes seen in training (zero before any finetuning).

Chained edits (an edit of a run that ns-edit wrote): the earlier edits' residuals are kept, frozen, as a stack
(:class:`EarlierEdit`, oldest first) that belongs to the base, each applied at its own alpha = 1 with its own view
appearance and edit region, under every alpha:

    s(x) = F_dens^0(H(x)) + sum_k r_k(x) F_dens^Dk(E_style^k(1), E_app^Dk, H(x)) + g(alpha) F_dens^D(...)

(and the same for ``l``), so the new edit's alpha = 0 is the earlier edit's alpha = 1 scene, op for op, and alpha = 1
is both edits. A field without earlier edits has no such modules (its state dict is unchanged).

The per-ray codes come from ``ray_samples.metadata`` (``"alpha"``: ``[..., 1]`` float, ``"beta_index"``: ``[..., 1]``
int64; see docs/ARCHITECTURE.md), defaulting to alpha 0 and the average appearance.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.mlp import MLP
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from nerfstudio.fields.base_field import get_normalized_directions
from nerfstudio.fields.nerfacto_field import NerfactoField

from nerfeditor_ns.nerf.beta_codes import GUIDE_BETA_OFFSET, beta_code
from nerfeditor_ns.nerf.edit_region import EditRegion

AVERAGE_APPEARANCE = -1
"""beta index meaning "average appearance of the original training images"."""


def gate(alpha: Tensor) -> Tensor:
    """g(alpha) of the residual: alpha itself (g(0) = 0, g(1) = 1, linear blend in between)."""
    return alpha


class CodeEncoder(nn.Module):
    """Small trainable MLP encoding a conditioning code (E_style for alpha, E_app for beta; paper Sec. 3.1)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, code: Float[Tensor, "*bs in_dim"]) -> Float[Tensor, "*bs out_dim"]:
        return self.net(code)


class ResidualHead(nn.Module):
    """ReLU MLP whose last layer starts at zero: the residual F^D contributes nothing until it is trained."""

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int, out_dim: int) -> None:
        super().__init__()
        layers = []
        width = in_dim
        for _ in range(max(num_layers - 1, 0)):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        last = nn.Linear(width, out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    @property
    def last(self) -> nn.Linear:
        return self.net[-1]

    def forward(self, x: Float[Tensor, "n in_dim"]) -> Float[Tensor, "n out_dim"]:
        return self.net(x)


def _encode_unique(values: Tensor, encoder: Callable[[Tensor], Tensor]) -> Tensor:
    """encoder(values) computed once per distinct value (a batch holds few distinct codes), gathered back."""
    unique, inverse = torch.unique(values, return_inverse=True)
    return encoder(unique)[inverse]


class _ResidualCodes:
    """Conditioning of one residual (the field's own, or an :class:`EarlierEdit`): E_app^D of guide codes and the
    view appearance. Needs ``app_encoder``, ``guide_beta_indices`` and ``d_beta``."""

    app_encoder: CodeEncoder
    guide_beta_indices: Tensor
    d_beta: int

    def view_app_embedding(self) -> Float[Tensor, "app_embed_dim"]:
        """E_app^D for rays without a guide beta: mean over the guide codes seen in training, zero before any."""
        if self.guide_beta_indices.numel() == 0:
            return self.app_encoder.net[-1].bias.new_zeros(self.app_encoder.net[-1].out_features)
        codes = beta_code(self.guide_beta_indices, self.d_beta).to(self.app_encoder.net[-1].bias)
        return self.app_encoder(codes).mean(dim=0)

    def _delta_app(self, beta: Int[Tensor, "n"]) -> Float[Tensor, "n app_embed_dim"]:
        def encode(unique: Tensor) -> Tensor:
            codes = beta_code(unique.clamp(min=0), self.d_beta).to(self.app_encoder.net[-1].bias)
            emb = self.app_encoder(codes)
            return torch.where((unique >= GUIDE_BETA_OFFSET)[:, None], emb, self.view_app_embedding()[None])

        return _encode_unique(beta, encode)


def _resize_guide_indices(module: nn.Module, state_dict: Dict[str, Tensor], prefix: str) -> None:
    """The guide index list grows in training: take the saved length before copying."""
    saved = state_dict.get(prefix + "guide_beta_indices")
    if saved is not None:
        module.guide_beta_indices = torch.zeros_like(saved, device=module.guide_beta_indices.device)


def _residual_density(
    residual: "ConditionalNerfField | EarlierEdit",
    features: Float[Tensor, "n hash_dim"],
    flat_alpha: Float[Tensor, "n"],
    flat_beta: Int[Tensor, "n"],
    points: Callable[[], Float[Tensor, "n 3"]],
) -> Optional[Dict[str, Tensor]]:
    """One residual's gated density logits ``g * F_dens^D`` on the samples it acts on (alpha != 0, inside its edit
    region), with what its colour head needs; None when it acts on no sample (then it is not evaluated)."""
    active = flat_alpha != 0
    region = None
    if residual.edit_region is not None and bool(active.any()):
        region = residual.edit_region.weight(points())
        active = active & (region > 0)
    if not bool(active.any()):
        return None
    idx = torch.nonzero(active, as_tuple=False).reshape(-1)
    g = gate(flat_alpha[idx])[:, None]
    if region is not None:  # g(alpha, x) = alpha * r(x) inside the edit region (edit_region.py)
        g = g * region[idx, None].to(g)
    e_style = _encode_unique(flat_alpha[idx], lambda a: residual.style_encoder(a[:, None]))
    cond = torch.cat([e_style, residual._delta_app(flat_beta[idx])], dim=-1)
    out = residual.delta_density_head(torch.cat([features[idx].to(cond), cond], dim=-1))
    delta_logit, f_delta = torch.split(out, [1, out.shape[-1] - 1], dim=-1)
    return {"idx": idx, "g": g, "cond": cond, "f_delta": f_delta, "gated": g * delta_logit}


def _residual_colour(
    residual: "ConditionalNerfField | EarlierEdit", d: Tensor, f_geo: Tensor, delta: Dict[str, Tensor]
) -> Float[Tensor, "m 3"]:
    """One residual's gated colour logits ``g * F_color^D`` on the samples of its :func:`_residual_density`."""
    idx = delta["idx"]
    x = torch.cat([d[idx], f_geo[idx], delta["f_delta"], delta["cond"]], dim=-1)
    return delta["g"] * residual.delta_color_head(x.to(delta["cond"]))


class EarlierEdit(_ResidualCodes, nn.Module):
    """The frozen residual of an earlier edit of a chained run: its E_style, E_app^D, F_dens^D, F_color^D, the guide
    codes it was finetuned with (its view appearance) and its edit region. Part of the base: applied at alpha = 1."""

    def __init__(self, d_beta: int, style_embed_dim: int, app_embed_dim: int, code_hidden_dim: int,
                 delta_hidden_dim: int, delta_num_layers: int, density_in_dim: int, colour_in_dim: int,
                 geo_feat_dim: int, edit_region: Optional[EditRegion]) -> None:
        super().__init__()
        self.d_beta = d_beta
        self.style_encoder = CodeEncoder(1, style_embed_dim, code_hidden_dim)
        self.app_encoder = CodeEncoder(d_beta, app_embed_dim, code_hidden_dim)
        self.delta_density_head = ResidualHead(density_in_dim, delta_hidden_dim, delta_num_layers, 1 + geo_feat_dim)
        self.delta_color_head = ResidualHead(colour_in_dim, delta_hidden_dim, delta_num_layers, 3)
        self.register_buffer("guide_beta_indices", torch.zeros(0, dtype=torch.long))
        self.edit_region = edit_region
        """Where this edit acted (None: everywhere); from the run's config (``prior_edit_regions``)."""
        self.requires_grad_(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        _resize_guide_indices(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


RESIDUAL_MODULES = ("style_encoder", "app_encoder", "delta_density_head", "delta_color_head")
"""Attribute names of a residual's modules (the field's own and each :class:`EarlierEdit`'s)."""
RESIDUAL_BUFFERS = ("guide_beta_indices",)
"""Attribute names of a residual's buffers."""


class ConditionalNerfField(_ResidualCodes, NerfactoField):
    """nerfacto's field plus the alpha-gated residual heads F_dens^D and F_color^D (see the module docstring).

    Args:
        aabb: scene box bounds.
        num_images: number of original training images (beta indices ``0..num_images-1``).
        d_beta: dimension of the guide beta codes in ``[0, 1]^d_beta``.
        style_embed_dim: output size of E_style.
        app_embed_dim: output size of E_app^D (the residual's appearance encoder).
        code_hidden_dim: hidden width of E_style / E_app^D.
        delta_hidden_dim: hidden width of the residual heads.
        delta_num_layers: layers of each residual head.
        appearance_embedding_dim: nerfacto's per-image appearance embedding of the base (0 = none).
        num_layers, hidden_dim, geo_feat_dim, num_levels, base_res, max_res, log2_hashmap_size, features_per_level,
        num_layers_color, hidden_dim_color, spatial_distortion, average_init_density, implementation: nerfacto's.
        prior_edit_regions: one entry per earlier edit of a chained run, oldest first: the edit region it was
            finetuned with (None: everywhere). Each gets a frozen :class:`EarlierEdit` (weights from the checkpoint).
    """

    def __init__(
        self,
        aabb: Tensor,
        num_images: int,
        d_beta: int = 16,
        style_embed_dim: int = 8,
        app_embed_dim: int = 16,
        code_hidden_dim: int = 32,
        delta_hidden_dim: int = 64,
        delta_num_layers: int = 2,
        appearance_embedding_dim: int = 32,
        num_layers: int = 2,
        hidden_dim: int = 64,
        geo_feat_dim: int = 15,
        num_levels: int = 16,
        base_res: int = 16,
        max_res: int = 2048,
        log2_hashmap_size: int = 19,
        features_per_level: int = 2,
        num_layers_color: int = 3,
        hidden_dim_color: int = 64,
        spatial_distortion: Optional[SpatialDistortion] = None,
        average_init_density: float = 1.0,
        implementation: Literal["tcnn", "torch"] = "tcnn",
        prior_edit_regions: Sequence[Optional[EditRegion]] = (),
    ) -> None:
        if num_images < 1:
            raise ValueError(f"ConditionalNerfField needs at least one training image, got num_images={num_images}.")
        super().__init__(
            aabb,
            num_images=num_images,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            geo_feat_dim=geo_feat_dim,
            num_levels=num_levels,
            base_res=base_res,
            max_res=max_res,
            log2_hashmap_size=log2_hashmap_size,
            num_layers_color=num_layers_color,
            features_per_level=features_per_level,
            hidden_dim_color=hidden_dim_color,
            appearance_embedding_dim=appearance_embedding_dim,
            use_average_appearance_embedding=True,
            spatial_distortion=spatial_distortion,
            average_init_density=average_init_density,
            implementation=implementation,
        )
        self.d_beta = d_beta
        # The residual density head reads H(x), so the base needs the hash encoding and its MLP as two modules. The
        # torch implementation already is exactly that (nerfacto's own modules are kept); tiny-cuda-nn fuses them,
        # so there the same encoding and network are rebuilt as two tcnn modules (same function, one more kernel).
        if not isinstance(self.mlp_base.model, nn.Sequential):
            self.mlp_base.model = nn.Sequential(
                HashEncoding(
                    num_levels=num_levels,
                    min_res=base_res,
                    max_res=max_res,
                    log2_hashmap_size=log2_hashmap_size,
                    features_per_level=features_per_level,
                    implementation=implementation,
                ),
                MLP(
                    in_dim=num_levels * features_per_level,
                    num_layers=num_layers,
                    layer_width=hidden_dim,
                    out_dim=1 + geo_feat_dim,
                    activation=nn.ReLU(),
                    out_activation=None,
                    implementation=implementation,
                ),
            )
        # nerfacto's colour head without its sigmoid, so the residual adds in logit space (sigmoid applied below).
        self.mlp_head = MLP(
            in_dim=self.mlp_head.in_dim,
            num_layers=num_layers_color,
            layer_width=hidden_dim_color,
            out_dim=3,
            activation=nn.ReLU(),
            out_activation=None,
            implementation=implementation,
        )

        # E_style(alpha), E_app^D(beta): small trainable MLPs (Sec. 3.1); residual heads F_dens^D, F_color^D.
        self.style_encoder = CodeEncoder(1, style_embed_dim, code_hidden_dim)
        self.app_encoder = CodeEncoder(d_beta, app_embed_dim, code_hidden_dim)
        cond_dim = style_embed_dim + app_embed_dim
        hash_dim = num_levels * features_per_level
        self.delta_density_head = ResidualHead(hash_dim + cond_dim, delta_hidden_dim, delta_num_layers, 1 + geo_feat_dim)
        self.delta_color_head = ResidualHead(
            self.direction_encoding.get_out_dim() + 2 * geo_feat_dim + cond_dim, delta_hidden_dim, delta_num_layers, 3
        )
        # Guide beta indices seen in training: the residual's view appearance is the mean of E_app^D over them.
        self.register_buffer("guide_beta_indices", torch.zeros(0, dtype=torch.long))
        self.last_density: Optional[Tensor] = None
        """Per-sample densities of the last forward pass (read by the model for L_br / L_ori)."""
        self.last_delta_penalty: Optional[Tensor] = None
        """Mean squared gated residual pre-activations of the last forward pass (None: residual not evaluated)."""
        self._delta: Optional[Dict[str, Tensor]] = None
        self.edit_region: Optional[EditRegion] = None
        """Where the residual may act (None: everywhere); see :mod:`nerfeditor_ns.nerf.edit_region`."""
        self.position_grads = True
        """Record gradients of the sample positions through the alpha = 0 branch (nerfstudio's habit: normals,
        camera refinement); off while that branch is frozen and nothing reads them (:meth:`freeze_base`)."""
        # earlier edits of a chained run, frozen into the base (built last: a plain field's init is unchanged)
        colour_in_dim = self.direction_encoding.get_out_dim() + 2 * geo_feat_dim + cond_dim
        self.prior_edits = nn.ModuleList([
            EarlierEdit(d_beta, style_embed_dim, app_embed_dim, code_hidden_dim, delta_hidden_dim, delta_num_layers,
                        hash_dim + cond_dim, colour_in_dim, geo_feat_dim, region)
            for region in prior_edit_regions
        ])
        self._prior_deltas: List[Tuple[EarlierEdit, Dict[str, Tensor]]] = []

    # ----------------------------------------------------------------------------------------- conditioning
    def set_edit_region(self, region: Optional[EditRegion]) -> None:
        """Gate the residual by a soft 3D region (None: no spatial gate)."""
        self.edit_region = region

    def register_guide_betas(self, beta_index: Int[Tensor, "*bs"]) -> None:
        """Remembers the guide beta indices (>= GUIDE_BETA_OFFSET) among ``beta_index`` for the view appearance."""
        guide = beta_index.reshape(-1)
        guide = guide[guide >= GUIDE_BETA_OFFSET].to(self.guide_beta_indices)
        if guide.numel() == 0:
            return
        self.guide_beta_indices = torch.unique(torch.cat([self.guide_beta_indices, guide]))

    def base_appearance(self, beta: Int[Tensor, "n"]) -> Optional[Float[Tensor, "n appearance_dim"]]:
        """nerfacto's embedding of training image ``i``; the average embedding for any other index."""
        if self.embedding_appearance is None:
            return None
        train = (beta >= 0) & (beta < self.num_images)
        if not bool(train.any()):
            return self.embedding_appearance.mean(dim=0)[None].expand(beta.shape[0], -1)
        emb = self.embedding_appearance(beta.clamp(0, self.num_images - 1))
        return torch.where(train[:, None], emb, self.embedding_appearance.mean(dim=0)[None])

    def codes_for(
        self, ray_samples: RaySamples, alpha: Optional[Tensor] = None, beta_index: Optional[Tensor] = None
    ) -> Tuple[Float[Tensor, "n"], Int[Tensor, "n"]]:
        """Flat per-sample alpha and beta index: the arguments, else the metadata, else alpha 0 / average."""
        metadata = ray_samples.metadata or {}
        device = ray_samples.frustums.origins.device
        alpha = metadata.get("alpha") if alpha is None else alpha
        beta_index = metadata.get("beta_index") if beta_index is None else beta_index
        shape = (*ray_samples.shape, 1)
        alpha = torch.zeros((), device=device) if alpha is None else alpha.to(device=device, dtype=torch.float32)
        if beta_index is None:
            beta_index = torch.full((), AVERAGE_APPEARANCE, device=device, dtype=torch.long)
        beta_index = beta_index.to(device=device, dtype=torch.long)
        return alpha.expand(shape).reshape(-1), beta_index.expand(shape).reshape(-1)

    # --------------------------------------------------------------------------------------------- density
    def density_with(
        self,
        ray_samples: RaySamples,
        alpha: Optional[Tensor] = None,
        beta_index: Optional[Tensor] = None,
    ) -> Tuple[Float[Tensor, "*batch 1"], Float[Tensor, "*batch geo_feat_dim"]]:
        """sigma = trunc_exp(F_dens^0(H(x)) + g(alpha) F_dens^D(E_style, E_app^D, H(x))) and nerfacto's f_geo.

        ``alpha`` / ``beta_index`` override the metadata (shape broadcastable to the samples' ``[..., 1]``).
        """
        if self.spatial_distortion is not None:
            positions = (self.spatial_distortion(ray_samples.frustums.get_positions()) + 2.0) / 4.0
        else:
            positions = SceneBox.get_normalized_positions(ray_samples.frustums.get_positions(), self.aabb)
        selector = ((positions > 0.0) & (positions < 1.0)).all(dim=-1)
        positions = positions * selector[..., None]
        self._sample_locations = positions
        if not self._sample_locations.requires_grad and self.position_grads:
            self._sample_locations.requires_grad = True
        encoding, base_mlp = self.mlp_base.model[0], self.mlp_base.model[1]
        features = encoding(positions.view(-1, 3))
        h = base_mlp(features)
        logit, f_geo = torch.split(h, [1, self.geo_feat_dim], dim=-1)

        self._delta = None
        self._prior_deltas = []
        self.last_delta_penalty = None
        flat_alpha, flat_beta = self.codes_for(ray_samples, alpha, beta_index)
        world: List[Tensor] = []

        def points() -> Tensor:  # world positions of the samples, for the edit regions (computed once)
            if not world:
                world.append(ray_samples.frustums.get_positions().reshape(-1, 3).detach())
            return world[0]

        if len(self.prior_edits) > 0:  # earlier edits: part of the base, each at its alpha = 1 and view appearance
            at_one = torch.ones_like(flat_alpha)
            average = torch.full_like(flat_beta, AVERAGE_APPEARANCE)
            for prior in self.prior_edits:
                prior_delta = _residual_density(prior, features, at_one, average, points)
                if prior_delta is not None:
                    logit = logit.to(prior_delta["gated"]).index_add(0, prior_delta["idx"], prior_delta["gated"])
                    self._prior_deltas.append((prior, prior_delta))
        # this edit's residual only where alpha != 0 (nothing at all for original-scene batches)
        delta = _residual_density(self, features, flat_alpha, flat_beta, points)
        if delta is not None:
            gated = delta.pop("gated")
            logit = logit.to(gated).index_add(0, delta["idx"], gated)
            self._delta = {**delta, "penalty": (gated**2).mean()}

        logit = logit.view(*ray_samples.shape, 1)
        self._density_before_activation = logit
        # exp activation as in nerfacto (stable for large densities)
        density = self.average_init_density * trunc_exp(logit.to(positions))
        density = density * selector[..., None]
        self.last_density = density
        return density, f_geo.view(*ray_samples.shape, self.geo_feat_dim)

    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        return self.density_with(ray_samples)

    # ---------------------------------------------------------------------------------------------- colour
    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None
    ) -> Dict[FieldHeadNames, Tensor]:
        """c = sigmoid(F_color^0(R(v), f_geo, E_app^0) + g(alpha) F_color^D(E_style, E_app^D, R(v), f_geo, f^D))."""
        assert density_embedding is not None
        directions = get_normalized_directions(ray_samples.frustums.directions)
        d = self.direction_encoding(directions.view(-1, 3))
        f_geo = density_embedding.reshape(-1, self.geo_feat_dim)
        _, flat_beta = self.codes_for(ray_samples)
        inputs = [d, f_geo]
        appearance = self.base_appearance(flat_beta)
        if appearance is not None:
            inputs.append(appearance.to(d))
        logits = self.mlp_head(torch.cat(inputs, dim=-1))

        for prior, prior_delta in self._prior_deltas:  # earlier edits (part of the base), oldest first
            gated = _residual_colour(prior, d, f_geo, prior_delta)
            logits = logits.to(gated).index_add(0, prior_delta["idx"], gated)
        self._prior_deltas = []
        delta = self._delta
        if delta is not None:
            gated = _residual_colour(self, d, f_geo, delta)
            logits = logits.to(gated).index_add(0, delta["idx"], gated)
            self.last_delta_penalty = delta["penalty"] + (gated**2).mean()
            self._delta = None
        rgb = torch.sigmoid(logits).view(*ray_samples.shape, 3).to(directions)
        return {FieldHeadNames.RGB: rgb}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        _resize_guide_indices(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------------------------------- finetuning
    def base_modules(self) -> Tuple[nn.Module, ...]:
        """The alpha = 0 branch: hash grid and density MLP, colour head, per-image appearance embedding (and the
        earlier edits of a chained run, always frozen)."""
        modules: Tuple[nn.Module, ...] = (self.mlp_base, self.mlp_head)
        if self.embedding_appearance is not None:
            modules += (self.embedding_appearance,)
        return modules + tuple(self.prior_edits)

    def residual_parameters(self) -> List[nn.Parameter]:
        """The parameters of this edit's residual (E_style, E_app^D, F_dens^D, F_color^D)."""
        return [p for name in RESIDUAL_MODULES for p in getattr(self, name).parameters()]

    def freeze_base(self, position_grads: bool = False) -> None:
        """Stops gradients into the alpha = 0 branch, so the original scene is exactly preserved.

        ``position_grads``: still record the sample positions' gradients through it (normals). Without them, and
        with the branch's parameters frozen, its hash encoding records no autograd graph at all and takes the fast
        path of ``fast_inference.py`` (the same values), and backward skips it."""
        for module in self.base_modules():
            module.requires_grad_(False)
        self.position_grads = position_grads
