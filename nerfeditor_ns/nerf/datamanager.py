"""Guide-set data manager: nerfacto's ray sampling plus rays from stylized guide sets (paper Sec. 3.4).

Design choice: ``GuideSetDataManager`` subclasses nerfstudio's ``ParallelDataManager`` (what nerfacto uses in
nerfstudio 1.1.5), so the original rays come from the very same worker process, pixel sampler and ray generator as
in nerfacto; with no guide set the training batches are nerfacto's batches, plus the per-ray conditioning keys.
Guide sets change at run time (``add_guide_set`` between training steps), which a worker process cannot see, so
guide rays are sampled in the training process, VanillaDataManager-style: the guide images stay as tensors on the
data manager's device and rays are drawn by random flat pixel indices. ``num_processes = 0`` samples the original
rays in the training process too (same sampler; no worker; handy for tests and debugging).

A training batch of ``N = train_num_rays_per_batch`` rays, when at least one guide set exists, holds

* ``N - round(guide_ray_fraction * N)`` original rays: a random subset of the worker's batch (alpha = 0,
  beta index = training image index),
* ``round(guide_ray_fraction * N) - P * S * S`` guide rays drawn uniformly over all pixels of all guide sets
  (alpha = the set's alpha, beta index = ``GUIDE_BETA_OFFSET`` + running count over guide images),
* ``P * S * S`` patch rays at the end: ``P = patches_per_batch`` square patches of ``S = patch_size`` contiguous
  pixels of one guide image each, row-major (for the depth smoothness loss, Eq. 5).

Outside training (the data manager in eval mode, as ``eval_setup`` leaves the pipeline for nerfstudio's tools),
``next_train`` returns nerfacto's original rays only, without conditioning keys: ``ns-export pointcloud`` then samples
the scene the model shows by default (``default_alpha``; the edit in an edited run), not a mix with guide rays.

See docs/ARCHITECTURE.md for the batch and metadata contract.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from jaxtyping import Int
from torch import Tensor

from nerfstudio.cameras.cameras import CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.parallel_datamanager import ParallelDataManager, ParallelDataManagerConfig
from nerfstudio.data.pixel_samplers import PixelSampler
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.utils.rich_utils import CONSOLE

from nerfeditor_ns.nerf.beta_codes import GUIDE_BETA_OFFSET
from nerfeditor_ns.nerf.guide_sets import GuideSet, GuideSetError, load_guide_sets, save_guide_sets

_PER_RAY_KEYS = ("image", "mask", "indices")


@dataclass
class GuideSetDataManagerConfig(ParallelDataManagerConfig):
    """Data manager that mixes nerfacto's original rays with rays from stylized guide sets."""

    _target: Type = field(default_factory=lambda: GuideSetDataManager)
    """Target class to instantiate."""
    num_processes: int = 1
    """Worker processes sampling the original rays (as nerfacto). 0 samples them in the training process."""
    guide_ray_fraction: float = 0.5
    """Fraction of every training batch drawn from guide sets (patch rays included) once any guide set exists."""
    patches_per_batch: int = 4
    """Number P of square guide-image patches per batch for the depth smoothness loss (Eq. 5); 0 disables."""
    patch_size: int = 8
    """Side S of the guide patches (S x S contiguous pixels). Unlike nerfstudio's field of the same name, this does
    not switch the original rays to patch sampling: they are sampled exactly as in nerfacto."""
    guide_sets_dir: Optional[Path] = None
    """Folder written by ``save_guide_sets`` (an ``index.json`` plus one folder per set), loaded at setup so that a
    finetuned run resumes with its guide sets. None starts without guide sets."""


class GuideSetDataManager(ParallelDataManager):
    """ParallelDataManager whose training batches also carry guide-set rays and per-ray style/appearance metadata.

    Args:
        config: the GuideSetDataManagerConfig.
        device: device for the returned rays, batches and the guide images.
        test_mode: nerfstudio's test mode ("inference" skips loading guide sets).
        world_size, local_rank: as nerfstudio's data managers.
    """

    config: GuideSetDataManagerConfig

    def __init__(
        self,
        config: GuideSetDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        _validate_config(config)
        self._guide_sets: List[GuideSet] = []
        self._guide_beta_starts: List[int] = []
        self._next_guide_beta = GUIDE_BETA_OFFSET
        self._dropped_keys_warned: set = set()
        self._local_image_data: Optional[Dict] = None
        self.last_ray_counts: Dict[str, int] = {}
        """Rays of each kind in the last training batch: "original", "guide", "patch"."""
        super().__init__(config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank)
        if config.guide_sets_dir is not None and test_mode != "inference":
            self._load_guide_sets_dir(Path(config.guide_sets_dir))

    # ------------------------------------------------------------------------------------------------------------
    # Original rays (nerfacto's path)

    def _get_pixel_sampler(self, dataset, num_rays_per_batch: int) -> PixelSampler:  # type: ignore[override]
        """nerfstudio's pixel sampler without its ``patch_size`` switch (our ``patch_size`` means guide patches)."""
        is_equirectangular = (dataset.cameras.camera_type == CameraType.EQUIRECTANGULAR.value).all()
        fisheye_crop_radius = None
        if dataset.cameras.metadata is not None:
            fisheye_crop_radius = dataset.cameras.metadata.get("fisheye_crop_radius")
        return self.config.pixel_sampler.setup(
            is_equirectangular=is_equirectangular,
            num_rays_per_batch=num_rays_per_batch,
            fisheye_crop_radius=fisheye_crop_radius,
        )

    def setup_train(self):
        """Starts nerfacto's worker processes, or with ``num_processes = 0`` caches the images in this process."""
        if self.config.num_processes > 0:
            super().setup_train()
            return
        assert self.train_dataset is not None
        self.train_pixel_sampler = self._get_pixel_sampler(self.train_dataset, self.config.train_num_rays_per_batch)
        items = [self.train_dataset[i] for i in range(len(self.train_dataset))]
        self._local_image_data = self.config.collate_fn(items)
        self._local_ray_generator = RayGenerator(self.train_dataset.cameras)

    def _next_original(self) -> Tuple[RayBundle, Dict]:
        """One batch of original rays as nerfacto samples them (worker queue or in-process)."""
        if self._local_image_data is None:
            ray_bundle, batch = self.data_queue.get()
        else:
            assert self.train_pixel_sampler is not None
            batch = self.train_pixel_sampler.sample(self._local_image_data)
            ray_bundle = self._local_ray_generator(batch["indices"])
        return ray_bundle.to(self.device), batch

    # ------------------------------------------------------------------------------------------------------------
    # Training batches

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        """Next training batch: original rays, then guide rays, then guide patches (see the module docstring)."""
        self.train_count += 1
        ray_bundle, batch = self._next_original()
        num_rays = len(ray_bundle)
        if not self.training:
            # the pipeline in eval mode: nerfstudio's exporters (ns-export pointcloud / poisson) sample the scene
            # through next_train; original rays only, without conditioning keys, so the model renders them at its
            # own alpha and appearance (``default_alpha``: the edit in an edited run), as ns-render and ns-viewer do
            self.last_ray_counts = {"original": num_rays, "guide": 0, "patch": 0}
            batch["ray_counts"] = dict(self.last_ray_counts)
            return ray_bundle, batch
        if not self._guide_sets:
            self.last_ray_counts = {"original": num_rays, "guide": 0, "patch": 0}
            ray_bundle, batch = self._original_part(ray_bundle, batch, keep_all_keys=True)
            batch["ray_counts"] = dict(self.last_ray_counts)
            return ray_bundle, batch

        num_guide_total = int(round(self.config.guide_ray_fraction * num_rays))
        num_patch = self._num_patch_rays()
        if num_patch > num_guide_total:
            raise ValueError(_patch_budget_message(self.config, num_rays))
        num_uniform = num_guide_total - num_patch
        num_orig = num_rays - num_guide_total

        keep = torch.randperm(num_rays)[:num_orig]
        orig_bundle, orig_batch = self._original_part(
            ray_bundle[keep.to(self.device)], _select_rays(batch, keep, num_rays), keep_all_keys=False
        )
        parts = [(orig_bundle, orig_batch)]
        if num_uniform > 0:
            parts.append(self._guide_rays(*self._sample_uniform_pixels(num_uniform)))
        if num_patch > 0:
            parts.append(self._guide_rays(*self._sample_patches()))

        out_bundle = _cat_ray_bundles([p[0] for p in parts], warned=self._dropped_keys_warned)
        orig_channels = orig_batch["image"].shape[-1]
        for _, part_batch in parts[1:]:
            if orig_channels == 4:  # RGBA training images: guide pixels are opaque
                part_batch["image"] = torch.cat([part_batch["image"], torch.ones_like(part_batch["image"][:, :1])], -1)
        out_batch: Dict = {k: torch.cat([p[1][k] for p in parts], dim=0) for k in orig_batch if k in parts[-1][1]}
        if num_patch > 0:
            out_batch["patch_shape"] = (self.config.patches_per_batch, self.config.patch_size)
        self.last_ray_counts = {"original": num_orig, "guide": num_uniform, "patch": num_patch}
        out_batch["ray_counts"] = dict(self.last_ray_counts)
        return out_bundle, out_batch

    def _num_patch_rays(self) -> int:
        return self.config.patches_per_batch * self.config.patch_size**2 if self.config.patches_per_batch > 0 else 0

    def _original_part(self, ray_bundle: RayBundle, batch: Dict, keep_all_keys: bool) -> Tuple[RayBundle, Dict]:
        """Adds alpha = 0, beta index = training image index and the batch keys to original rays."""
        num = len(ray_bundle)
        device = ray_bundle.origins.device
        camera_indices = batch["indices"][:, 0:1].to(device=device, dtype=torch.long)
        alpha = torch.zeros(num, 1, device=device)
        ray_bundle.metadata["alpha"] = alpha
        ray_bundle.metadata["beta_index"] = camera_indices.clone()
        out: Dict = {}
        if keep_all_keys:
            out.update(batch)
        else:
            dropped = [k for k in batch if k not in _PER_RAY_KEYS and k not in self._dropped_keys_warned]
            if dropped:
                CONSOLE.print(f"[bold yellow]Guide-set batches drop the per-ray keys {dropped} (no guide values).")
                self._dropped_keys_warned.update(dropped)
        out["image"] = batch["image"].to(device)
        if "mask" in batch:
            out["mask"] = batch["mask"].to(device=device, dtype=torch.float32).reshape(num, 1)
        else:
            out["mask"] = torch.ones(num, 1, device=device)
        out["indices"] = batch["indices"].to(device)
        out["set_index"] = torch.zeros(num, dtype=torch.long, device=device)
        out["alpha"] = alpha.clone()
        return ray_bundle, out

    # ------------------------------------------------------------------------------------------------------------
    # Guide rays

    def _sample_uniform_pixels(self, num: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(set, image, row, col) of ``num`` pixels drawn uniformly over all pixels of all guide sets."""
        sizes = torch.tensor([gs.images.shape[:3].numel() for gs in self._guide_sets], device=self.device)
        ends = torch.cumsum(sizes, 0)
        flat = torch.randint(int(ends[-1]), (num,), device=self.device)
        set_ids = torch.searchsorted(ends, flat, right=True)
        local = flat - (ends - sizes)[set_ids]
        heights = torch.tensor([gs.height for gs in self._guide_sets], device=self.device)[set_ids]
        widths = torch.tensor([gs.width for gs in self._guide_sets], device=self.device)[set_ids]
        image_ids = local // (heights * widths)
        rem = local - image_ids * heights * widths
        return set_ids, image_ids, rem // widths, rem % widths

    def _sample_patches(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(set, image, row, col) of P patches of S x S pixels, each from one guide image, row-major."""
        num, side = self.config.patches_per_batch, self.config.patch_size
        counts = torch.tensor([len(gs) for gs in self._guide_sets], device=self.device)
        ends = torch.cumsum(counts, 0)
        flat_image = torch.randint(int(ends[-1]), (num,), device=self.device)
        set_ids = torch.searchsorted(ends, flat_image, right=True)
        image_ids = flat_image - (ends - counts)[set_ids]
        heights = torch.tensor([gs.height for gs in self._guide_sets], device=self.device)[set_ids]
        widths = torch.tensor([gs.width for gs in self._guide_sets], device=self.device)[set_ids]
        top = (torch.rand(num, device=self.device) * (heights - side + 1)).long()
        left = (torch.rand(num, device=self.device) * (widths - side + 1)).long()
        offsets = torch.arange(side, device=self.device)
        rows = (top[:, None, None] + offsets[None, :, None]).expand(num, side, side)
        cols = (left[:, None, None] + offsets[None, None, :]).expand(num, side, side)
        per_pixel = lambda t: t[:, None, None].expand(num, side, side).reshape(-1)  # noqa: E731
        return per_pixel(set_ids), per_pixel(image_ids), rows.reshape(-1), cols.reshape(-1)

    def _guide_rays(
        self, set_ids: Int[Tensor, "n"], image_ids: Int[Tensor, "n"], rows: Int[Tensor, "n"], cols: Int[Tensor, "n"]
    ) -> Tuple[RayBundle, Dict]:
        """Rays, colours, masks and conditioning of the given guide pixels, in the given order."""
        bundles: List[RayBundle] = []
        positions: List[Tensor] = []
        for s, gs in enumerate(self._guide_sets):
            pos = torch.nonzero(set_ids == s, as_tuple=False).reshape(-1)
            if pos.numel() == 0:
                continue
            img, y, x = image_ids[pos], rows[pos], cols[pos]
            coords = torch.stack([y, x], dim=-1).float() + 0.5  # pixel centres, as Cameras.get_image_coords
            bundle = gs.cameras.generate_rays(camera_indices=img.unsqueeze(-1), coords=coords)
            beta = (self._guide_beta_starts[s] + img).unsqueeze(-1)
            num = pos.numel()
            bundle.camera_indices = beta.clone()
            bundle.metadata["alpha"] = torch.full((num, 1), gs.alpha, device=self.device)
            bundle.metadata["beta_index"] = beta
            bundle.metadata["_rgb"] = gs.images[img, y, x]
            bundle.metadata["_mask"] = (
                gs.masks[img, y, x] if gs.masks is not None else torch.ones(num, 1, device=self.device)
            )
            bundle.metadata["_set_index"] = torch.full((num, 1), s + 1, dtype=torch.long, device=self.device)
            bundle.metadata["_indices"] = torch.stack([beta[:, 0], y, x], dim=-1)
            bundles.append(bundle)
            positions.append(pos)
        order = torch.cat(positions)
        merged = _cat_ray_bundles(bundles)[torch.argsort(order)]
        meta = merged.metadata
        batch = {
            "image": meta.pop("_rgb"),
            "mask": meta.pop("_mask"),
            "indices": meta.pop("_indices"),
            "set_index": meta.pop("_set_index").reshape(-1),
            "alpha": meta["alpha"].clone(),
        }
        return merged, batch

    # ------------------------------------------------------------------------------------------------------------
    # Guide-set management (usable between training steps)

    @property
    def guide_sets(self) -> List[GuideSet]:
        """The guide sets in insertion order (set number s is ``guide_sets[s - 1]``)."""
        return list(self._guide_sets)

    def guide_beta_range(self, name: str) -> Tuple[int, int]:
        """(first beta index, number of images) of the named guide set."""
        s = self._find(name)
        return self._guide_beta_starts[s], len(self._guide_sets[s])

    def add_guide_set(self, guide_set: GuideSet, beta_start: Optional[int] = None) -> int:
        """Adds a guide set (moved to the data manager's device) and returns its set number (1-based).

        Args:
            guide_set: the set; its name must be new.
            beta_start: first beta index for its images; default: the next unused guide index.
        """
        if any(gs.name == guide_set.name for gs in self._guide_sets):
            raise ValueError(
                f"A guide set named {guide_set.name!r} exists already; use replace_guide_set() to swap it."
            )
        gs, start = self._prepare(guide_set, beta_start)
        self._guide_sets.append(gs)
        self._guide_beta_starts.append(start)
        return len(self._guide_sets)

    def replace_guide_set(self, guide_set: GuideSet) -> int:
        """Replaces the set of the same name in place (same set number, fresh beta indices); returns its number."""
        s = self._find(guide_set.name)
        gs, start = self._prepare(guide_set, None)
        self._guide_sets[s] = gs
        self._guide_beta_starts[s] = start
        return s + 1

    def remove_guide_set(self, name: str) -> None:
        """Removes the named set; later sets move down one set number. Its beta indices are not reused."""
        s = self._find(name)
        del self._guide_sets[s]
        del self._guide_beta_starts[s]

    def save_guide_sets(self, directory: Union[str, Path]) -> Path:
        """Writes all guide sets (with their beta indices) to ``directory``, loadable through ``guide_sets_dir``."""
        return save_guide_sets(directory, self._guide_sets, self._guide_beta_starts)

    def _find(self, name: str) -> int:
        for s, gs in enumerate(self._guide_sets):
            if gs.name == name:
                return s
        raise KeyError(f"No guide set named {name!r}; existing sets: {[gs.name for gs in self._guide_sets]}.")

    def _prepare(self, guide_set: GuideSet, beta_start: Optional[int]) -> Tuple[GuideSet, int]:
        if not isinstance(guide_set, GuideSet):
            raise TypeError(f"Expected a GuideSet, got {type(guide_set).__name__}.")
        side = self.config.patch_size
        if self.config.patches_per_batch > 0 and (guide_set.height < side or guide_set.width < side):
            raise ValueError(
                f"Guide set {guide_set.name!r} has {guide_set.width}x{guide_set.height} images, smaller than the "
                f"{side}x{side} depth patches; lower --pipeline.datamanager.patch-size."
            )
        num = len(guide_set)
        if beta_start is None:
            start = self._next_guide_beta
        else:
            start = int(beta_start)
            if start < GUIDE_BETA_OFFSET:
                raise ValueError(f"Guide beta indices start at {GUIDE_BETA_OFFSET}, got beta_start={start}.")
            for other_start, other in zip(self._guide_beta_starts, self._guide_sets):
                if other.name != guide_set.name and start < other_start + len(other) and other_start < start + num:
                    raise ValueError(
                        f"Beta indices [{start}, {start + num}) of guide set {guide_set.name!r} overlap those of "
                        f"{other.name!r}."
                    )
        self._next_guide_beta = max(self._next_guide_beta, start + num)
        return guide_set.to(self.device), start

    def _load_guide_sets_dir(self, directory: Path) -> None:
        if not (directory / "index.json").is_file():
            raise FileNotFoundError(
                f"--pipeline.datamanager.guide-sets-dir {directory}: no saved guide sets there (index.json missing). "
                "Point it at a folder written by GuideSetDataManager.save_guide_sets, or leave it unset."
            )
        try:
            sets, starts = load_guide_sets(directory)
        except GuideSetError as err:
            raise GuideSetError(f"--pipeline.datamanager.guide-sets-dir {directory}: {err}") from err
        for gs, start in zip(sets, starts):
            self.add_guide_set(gs, beta_start=start)
        CONSOLE.print(f"Loaded {len(sets)} guide set(s) from {directory}: {[gs.name for gs in sets]}")


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _validate_config(config: GuideSetDataManagerConfig) -> None:
    if not 0.0 <= config.guide_ray_fraction <= 1.0:
        raise ValueError(f"guide_ray_fraction must lie in [0, 1], got {config.guide_ray_fraction}.")
    if config.patches_per_batch < 0:
        raise ValueError(f"patches_per_batch must be >= 0, got {config.patches_per_batch}.")
    if config.patches_per_batch > 0 and config.patch_size < 2:
        raise ValueError(f"patch_size must be >= 2 for depth patches, got {config.patch_size}.")
    if config.num_processes < 0:
        raise ValueError(f"num_processes must be >= 0, got {config.num_processes}.")
    num_rays = config.train_num_rays_per_batch
    if config.patches_per_batch > 0 and config.patches_per_batch * config.patch_size**2 > round(
        config.guide_ray_fraction * num_rays
    ):
        raise ValueError(_patch_budget_message(config, num_rays))


def _patch_budget_message(config: GuideSetDataManagerConfig, num_rays: int) -> str:
    return (
        f"Guide patches need {config.patches_per_batch} x {config.patch_size}^2 = "
        f"{config.patches_per_batch * config.patch_size**2} rays but only round({config.guide_ray_fraction} x "
        f"{num_rays}) = {round(config.guide_ray_fraction * num_rays)} guide rays fit in a batch; lower "
        "--pipeline.datamanager.patches-per-batch / patch-size or raise guide-ray-fraction / train-num-rays-per-batch."
    )


def _select_rays(batch: Dict, keep: Tensor, num_rays: int) -> Dict:
    """Selects rays ``keep`` from every per-ray tensor of a nerfstudio batch (other entries pass through)."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == num_rays:
            out[key] = value[keep.to(value.device)]
        else:
            out[key] = value
    return out


def _cat_ray_bundles(bundles: List[RayBundle], warned: Optional[set] = None) -> RayBundle:
    """Concatenates flat ray bundles along the ray dimension (all fields and metadata)."""
    if len(bundles) == 1:
        return bundles[0]
    values = {}
    for f in dataclasses.fields(RayBundle):
        if f.name == "metadata":
            continue
        parts = [getattr(b, f.name) for b in bundles]
        present = [p is not None for p in parts]
        if all(present):
            values[f.name] = torch.cat(parts, dim=0)
        elif any(present):
            raise ValueError(
                f"Cannot mix rays with and without '{f.name}' (training cameras and guide cameras must agree)."
            )
        else:
            values[f.name] = None
    common = set(bundles[0].metadata)
    for b in bundles[1:]:
        common &= set(b.metadata)
    dropped = set().union(*(set(b.metadata) for b in bundles)) - common
    if dropped and warned is not None and not dropped <= warned:
        CONSOLE.print(f"[bold yellow]Ray metadata {sorted(dropped)} exists only for some rays; dropped.")
        warned.update(dropped)
    metadata = {k: torch.cat([b.metadata[k] for b in bundles], dim=0) for k in bundles[0].metadata if k in common}
    return RayBundle(metadata=metadata, **values)

