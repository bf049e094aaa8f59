"""Conditional NeRF field of NeRFEditor (paper Sec. 3.1, App. A).

Nerfacto-style field whose density AND colour heads are conditioned on a style code alpha and an appearance code
beta, each encoded by a small trainable MLP:

    F_dens : (E_style(alpha), E_app(beta), H(x))        -> (f_geo, sigma)
    F_color: (E_style(alpha), E_app(beta), R(v), f_geo) -> c

H is nerfstudio's multi-resolution hash encoding (tiny-cuda-nn when installed, the pure-torch fallback
otherwise), R the spherical-harmonics direction encoding. The per-ray codes come from ``ray_samples.metadata``
(``"alpha"``: ``[..., 1]`` float, ``"beta_index"``: ``[..., 1]`` int64; see docs/ARCHITECTURE.md). The beta vector
itself is the fixed function ``beta_code(index, d_beta)``; index ``-1`` (:data:`AVERAGE_APPEARANCE`) asks for the
average appearance of the original training images (mean of E_app over their codes), which is what eval and the
viewer use by default.

Everything runs as one batched pass over all samples: the codes are encoded once per ray and broadcast along the
samples, so the field costs one hash lookup and two small MLPs like nerfacto's.
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding, SHEncoding
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.mlp import MLP
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from nerfstudio.fields.base_field import Field, get_normalized_directions

from nerfeditor_ns.nerf.beta_codes import beta_code

AVERAGE_APPEARANCE = -1
"""beta index meaning "average appearance of the original training images"."""


class CodeEncoder(nn.Module):
    """Small trainable MLP encoding a conditioning code (E_style for alpha, E_app for beta; paper Sec. 3.1)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, code: Float[Tensor, "*bs in_dim"]) -> Float[Tensor, "*bs out_dim"]:
        return self.net(code)


class ConditionalNerfField(Field):
    """Nerfacto-like field conditioned on (alpha, beta) in both the density and the colour head.

    Args:
        aabb: scene box bounds.
        num_images: number of original training images (beta indices ``0..num_images-1``); used for the average
            appearance.
        d_beta: dimension of the beta code in ``[0, 1]^d_beta``.
        style_embed_dim: output size of E_style.
        app_embed_dim: output size of E_app.
        code_hidden_dim: hidden width of E_style / E_app.
        num_layers: layers of F_dens.
        hidden_dim: width of F_dens.
        geo_feat_dim: size of f_geo.
        num_levels, base_res, max_res, log2_hashmap_size, features_per_level: hash grid H(x).
        num_layers_color, hidden_dim_color: F_color.
        spatial_distortion: scene contraction (nerfacto's), or None to normalise by the aabb.
        average_init_density: scale of the initial density (nerfacto's).
        implementation: "tcnn" (falls back to torch when tiny-cuda-nn is missing) or "torch".
    """

    aabb: Tensor

    def __init__(
        self,
        aabb: Tensor,
        num_images: int,
        d_beta: int = 16,
        style_embed_dim: int = 8,
        app_embed_dim: int = 16,
        code_hidden_dim: int = 32,
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
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"ConditionalNerfField needs at least one training image, got num_images={num_images}.")
        self.register_buffer("aabb", aabb)
        self.num_images = num_images
        self.d_beta = d_beta
        self.geo_feat_dim = geo_feat_dim
        self.spatial_distortion = spatial_distortion
        self.average_init_density = average_init_density

        # E_style(alpha), E_app(beta): small trainable MLPs (Sec. 3.1).
        self.style_encoder = CodeEncoder(1, style_embed_dim, code_hidden_dim)
        self.app_encoder = CodeEncoder(d_beta, app_embed_dim, code_hidden_dim)
        cond_dim = style_embed_dim + app_embed_dim

        # H(x) and R(v).
        self.hash_encoding = HashEncoding(
            num_levels=num_levels,
            min_res=base_res,
            max_res=max_res,
            log2_hashmap_size=log2_hashmap_size,
            features_per_level=features_per_level,
            implementation=implementation,
        )
        self.direction_encoding = SHEncoding(levels=4, implementation=implementation)

        # F_dens: (E_style, E_app, H(x)) -> (sigma, f_geo)
        self.density_mlp = MLP(
            in_dim=self.hash_encoding.get_out_dim() + cond_dim,
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=1 + geo_feat_dim,
            activation=nn.ReLU(),
            out_activation=None,
            implementation=implementation,
        )
        # F_color: (E_style, E_app, R(v), f_geo) -> c
        self.color_mlp = MLP(
            in_dim=self.direction_encoding.get_out_dim() + geo_feat_dim + cond_dim,
            num_layers=num_layers_color,
            layer_width=hidden_dim_color,
            out_dim=3,
            activation=nn.ReLU(),
            out_activation=nn.Sigmoid(),
            implementation=implementation,
        )
        # Codes of the original images, for the average appearance (fixed, so a buffer; not saved).
        codes = beta_code(torch.arange(num_images, dtype=torch.long), d_beta).float()
        self.register_buffer("train_beta_codes", codes, persistent=False)

    # ----------------------------------------------------------------------------------------- conditioning
    def average_app_embedding(self) -> Float[Tensor, "app_embed_dim"]:
        """Mean of E_app over the beta codes of the original training images."""
        return self.app_encoder(self.train_beta_codes).mean(dim=0)

    def encode_codes(
        self, alpha: Float[Tensor, "*rays 1"], beta_index: Int[Tensor, "*rays 1"]
    ) -> Float[Tensor, "*rays cond_dim"]:
        """[E_style(alpha), E_app(beta)] per ray; ``beta_index == -1`` gives the average appearance."""
        beta_index = beta_index.to(device=alpha.device, dtype=torch.long)
        flat_index = beta_index.reshape(-1)
        codes = beta_code(flat_index.clamp(min=0), self.d_beta).to(alpha)
        e_app = self.app_encoder(codes)
        average = (flat_index == AVERAGE_APPEARANCE)[:, None]
        e_app = torch.where(average, self.average_app_embedding().to(e_app)[None, :], e_app)
        e_app = e_app.reshape(*beta_index.shape[:-1], -1)
        e_style = self.style_encoder(alpha.to(e_app))
        return torch.cat([e_style, e_app], dim=-1)

    def codes_for(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        """alpha / beta_index of the samples' rays (metadata), defaulting to the original scene, average look."""
        ray_shape = ray_samples.shape
        device = ray_samples.frustums.origins.device
        metadata = ray_samples.metadata or {}
        alpha = metadata.get("alpha")
        beta_index = metadata.get("beta_index")
        if alpha is None:  # one code broadcast over every sample
            alpha = torch.zeros((1,) * (len(ray_shape) + 1), device=device)
        if beta_index is None:
            beta_index = torch.full_like(alpha, AVERAGE_APPEARANCE, dtype=torch.long)
        return alpha, beta_index

    def conditioning(
        self,
        ray_samples: RaySamples,
        alpha: Optional[Tensor] = None,
        beta_index: Optional[Tensor] = None,
    ) -> Float[Tensor, "*batch cond_dim"]:
        """Per-sample conditioning features, encoded once per ray and broadcast along the samples.

        ``alpha`` / ``beta_index`` override the metadata (shape broadcastable to the samples' ``[..., 1]``).
        """
        meta_alpha, meta_beta = self.codes_for(ray_samples)
        alpha = meta_alpha if alpha is None else alpha
        beta_index = meta_beta if beta_index is None else beta_index
        alpha, beta_index = torch.broadcast_tensors(alpha, beta_index)
        cond = self.encode_codes(alpha.float(), beta_index)
        return cond.expand(*ray_samples.shape, cond.shape[-1])

    # --------------------------------------------------------------------------------------------- density
    def _normalized_positions(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        if self.spatial_distortion is not None:
            positions = self.spatial_distortion(ray_samples.frustums.get_positions())
            positions = (positions + 2.0) / 4.0
        else:
            positions = SceneBox.get_normalized_positions(ray_samples.frustums.get_positions(), self.aabb)
        selector = ((positions > 0.0) & (positions < 1.0)).all(dim=-1)
        return positions * selector[..., None], selector

    def density_with(
        self,
        ray_samples: RaySamples,
        alpha: Optional[Tensor] = None,
        beta_index: Optional[Tensor] = None,
    ) -> Tuple[Float[Tensor, "*batch 1"], Float[Tensor, "*batch geo_feat_dim"]]:
        """F_dens(E_style(alpha), E_app(beta), H(x)) -> (sigma, f_geo) (paper Sec. 3.1), codes overridable."""
        positions, selector = self._normalized_positions(ray_samples)
        self._sample_locations = positions
        if not self._sample_locations.requires_grad and torch.is_grad_enabled():
            self._sample_locations.requires_grad = True
        hash_features = self.hash_encoding(positions.view(-1, 3))
        cond = self.conditioning(ray_samples, alpha, beta_index).reshape(-1, self.conditioning_dim)
        h = self.density_mlp(torch.cat([hash_features.to(cond), cond], dim=-1))
        h = h.view(*ray_samples.shape, -1).to(positions)
        density_before_activation, f_geo = torch.split(h, [1, self.geo_feat_dim], dim=-1)
        self._density_before_activation = density_before_activation
        # exp activation as in nerfacto (stable for large densities)
        density = self.average_init_density * trunc_exp(density_before_activation)
        density = density * selector[..., None]
        return density, f_geo

    @property
    def conditioning_dim(self) -> int:
        return self.style_encoder.net[-1].out_features + self.app_encoder.net[-1].out_features

    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Tensor]:
        return self.density_with(ray_samples)

    # ---------------------------------------------------------------------------------------------- colour
    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None
    ) -> Dict[FieldHeadNames, Tensor]:
        """F_color(E_style(alpha), E_app(beta), R(v), f_geo) -> c (paper Sec. 3.1)."""
        assert density_embedding is not None
        directions = get_normalized_directions(ray_samples.frustums.directions)
        d = self.direction_encoding(directions.view(-1, 3))
        cond = self.conditioning(ray_samples).reshape(-1, self.conditioning_dim)
        h = torch.cat([d.to(cond), density_embedding.reshape(-1, self.geo_feat_dim).to(cond), cond], dim=-1)
        rgb = self.color_mlp(h).view(*ray_samples.shape, 3).to(directions)
        return {FieldHeadNames.RGB: rgb}
