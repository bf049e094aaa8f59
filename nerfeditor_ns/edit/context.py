"""What the steps of an edit share: the runs (original and edited, loaded by one :func:`load_run`), the networks
(each loaded once, a wrong file refused naming its flag), the view sets, and the cached step runner
:meth:`EditContext.step`.

Module-level imports are light (no torch / nerfstudio); everything heavy is loaded on first use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nerfeditor_ns.edit.args import EditArgs
from nerfeditor_ns.edit.checks import ValidatedEdit
from nerfeditor_ns.edit.errors import EditError, check_stop_after, out_of_memory_hint
from nerfeditor_ns.edit.networks import NETWORK_SOURCES, NetworkPaths
from nerfeditor_ns.edit.run_dir import RunDir, safe_torch_load, step_key
from nerfeditor_ns.edit.scene_cache import SceneCache, copy_file, link_or_copy
from nerfeditor_ns.edit.scene_steps import SCENE_STEPS, scene_step_key
from nerfeditor_ns.io_utils import atomic_torch_save, file_sha256

GUIDES_DIRNAME = "guides"
"""Folder of the guide sets inside the new run (loaded by its data manager)."""

_LOAD_ERRORS: Tuple[type, ...] = (ValueError, RuntimeError, KeyError, OSError, EOFError, TypeError)


def console():
    """The rich console ``ns-edit`` prints to (stderr)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def choose_device(choice: str):
    """``--device`` as a torch device (``auto``: CUDA when available)."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise EditError("--device cuda was given but CUDA is not available.", "use --device cpu or auto.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def load_network(name: str, path: Path, loader: Callable[[Path], Any]) -> Any:
    """Load a network file; a wrong or corrupt file becomes an :class:`EditError` naming the flag."""
    import pickle

    flag, env, what = NETWORK_SOURCES[name]
    try:
        return loader(path)
    except (pickle.UnpicklingError, *_LOAD_ERRORS) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EditError(
            f"{flag} {path} could not be loaded as a {what}: {first}",
            f"check that {flag} (or ${env}) points at the right file in a supported format.",
        ) from None


def net_id(path: Optional[Path]) -> Optional[List[Any]]:
    """Cheap identity of a file for cache keys (path, size, mtime); edit.json records the SHA-256."""
    if path is None:
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, int(st.st_mtime)]


def checkpoint_id(config_path: Path) -> List[Any]:
    """Cache-key identity of a run's newest checkpoint (the run directory when it has none)."""
    from nerfeditor_ns.edit.finetune import latest_checkpoint

    run = Path(config_path).absolute().parent
    ckpt = latest_checkpoint(run / "nerfstudio_models")
    return [str(run)] if ckpt is None else net_id(ckpt)


def file_identity(path: Path) -> List[Any]:
    """Identity of a large file for the scene cache's keys without reading it: path, size, modification time (ns)."""
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (before every computed step, so that a step's result
    never depends on which earlier steps were computed and which were loaded from a cache)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rescaled(cameras, scale: float):
    """A copy of ``cameras`` rendering at ``scale`` times their resolution."""
    import copy

    cams = copy.deepcopy(cameras)
    cams.rescale_output_resolution(scale)
    return cams


def load_run(config_path: Path, render_chunk: int, place_at: Optional[Path] = None, chain_base: bool = False):
    """(config, pipeline) of a nerfstudio run set up as nerfstudio's ``eval_setup`` does (for this plugin's runs without
    importing nerfstudio's method registry: ``ns_compat.setup_for_eval``), after checking what would otherwise fail
    deep inside it. ``place_at``: load the run as if it lived there (the edited run in ``<out>.partial``, whatever
    its config.yml says, so a resume after the final config was written still finds it); its guide sets are read
    from ``place_at/guides``. ``chain_base``: an edited run loaded as the original of a chained edit, its edit
    frozen into the base (:func:`nerfeditor_ns.edit.chain.as_chain_base`): its alpha = 0 is the edit's result."""
    import contextlib
    import io

    import yaml

    from nerfeditor_ns.edit.finetune import latest_checkpoint, place_run
    from nerfeditor_ns.method_names import NERFEDITOR_METHODS
    from nerfeditor_ns.nerf.ns_compat import nerfstudio_checkpoint_globals, setup_for_eval

    def placed(cfg):
        if chain_base:
            from nerfeditor_ns.edit.chain import as_chain_base

            as_chain_base(cfg)
        if place_at is not None:
            place_run(cfg, place_at)
            cfg.pipeline.datamanager.guide_sets_dir = Path(place_at) / GUIDES_DIRNAME
        return cfg

    config_path = Path(config_path)
    config = placed(yaml.load(config_path.read_text(), Loader=yaml.Loader))  # nerfstudio's own format (its own run)
    ckpt_dir = Path(config.get_checkpoint_dir())
    checkpoint = latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
    if checkpoint is None:
        raise EditError(
            f"The run {config_path} has no checkpoint in {ckpt_dir}.",
            "finish (or resume) its training first; ns-edit resolves output_dir relative to the current directory, "
            "so run it from the directory you trained in.",
        )
    data = config.pipeline.datamanager.data if config.pipeline.datamanager.data is not None else config.data
    if data is not None and not Path(data).exists():
        raise EditError(
            f"The run's training data {data} does not exist (paths in config.yml are relative to where ns-train ran).",
            "run ns-edit from the directory you trained in.",
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()), nerfstudio_checkpoint_globals():
            if config.method_name in NERFEDITOR_METHODS:  # without nerfstudio's method registry (ns_compat.py)
                pipeline = setup_for_eval(config, checkpoint, eval_num_rays_per_chunk=render_chunk)
            else:
                from nerfstudio.utils.eval_utils import eval_setup

                config, pipeline, _, _ = eval_setup(config_path, eval_num_rays_per_chunk=render_chunk,
                                                    test_mode="test", update_config_callback=placed)
    except RuntimeError as err:
        if "state_dict" not in str(err):
            raise
        raise EditError(
            f"The checkpoint of {config_path} does not fit this version's model (its weights have another layout; "
            "runs trained with nerfeditor-ns 0.1, before the alpha-gated residual field, cannot be loaded).",
            "retrain the scene with `ns-train nerfeditor --data <data>` and edit the new run.",
        ) from None
    return config, pipeline


@dataclass
class EditContext:
    """State shared by the steps; heavy objects are loaded on first use and kept.

    ``plan`` is the step order (names); :meth:`step` numbers its ``[i/N]`` lines and chains cache keys by it.
    ``scene_cache``: where the edit-independent steps are cached for every edit of the run (None: only in the edit).
    """

    args: EditArgs
    checked: ValidatedEdit
    plan: Sequence[str]
    device: Any = None
    console: Any = None
    results: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    keys: Dict[str, str] = field(default_factory=dict)
    nets: Dict[str, Any] = field(default_factory=dict)
    scene_cache: Optional[SceneCache] = None
    _loaded: Dict[str, Any] = field(default_factory=dict)

    # --------------------------------------------------------------------------------------------- shortcuts
    @property
    def run(self) -> RunDir:
        return self.checked.run

    @property
    def networks(self) -> NetworkPaths:
        return self.checked.networks

    @property
    def mode(self) -> str:
        return self.checked.mode

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._loaded:
            self._loaded[key] = make()
        return self._loaded[key]

    # ------------------------------------------------------------------------------------------------- runs
    def original(self):
        """(config, pipeline) of the original run: for a chained edit, the edited run with its edit frozen into the
        base (its alpha = 0 is that edit's alpha = 1 scene)."""
        return self._once("original", lambda: load_run(self.args.load_config, self.args.render_chunk,
                                                       chain_base=bool(self.checked.chain)))

    def edited(self):
        """The finetuned pipeline, loaded from the partial run directory."""
        work = self.run.work
        return load_run(work / "config.yml", self.args.render_chunk, place_at=work)[1]

    def cameras(self):
        """Training cameras of the original run."""
        return self.original()[1].datamanager.train_dataset.cameras

    def geometry(self):
        """The capture's frontal camera, orbit and per-camera yaw / pitch (independent of the view-split flags)."""

        def make():
            from nerfeditor_ns.edit.views import analyse_capture

            try:
                return analyse_capture(self.cameras(), self.args.frontal_camera)
            except ValueError as err:
                raise EditError(f"Cannot build the edit views: {err}", "check --frontal-camera.") from None

        return self._once("geometry", make)

    def views(self):
        """In-/out-of-domain view set (deterministic given the run and the geometry flags)."""

        def make():
            from nerfeditor_ns.edit.domain_steps import check_capture
            from nerfeditor_ns.edit.views import make_view_set

            a = self.args
            if a.in_domain_yaw is None:  # the split is resolved from the capture (run_edit does it up front)
                check_capture(self)
            cameras = self.cameras()
            if a.render_scale != 1.0:
                cameras = rescaled(cameras, a.render_scale)
            try:
                return make_view_set(cameras, frontal_index=a.frontal_camera, in_domain_yaw=a.in_domain_yaw,
                                     in_domain_pitch=a.in_domain_pitch, num_in_yaw=a.num_in_yaw,
                                     num_in_pitch=a.num_in_pitch, num_out=a.num_out_domain,
                                     geometry=self.geometry())
            except ValueError as err:
                raise EditError(f"Cannot build the edit views: {err}",
                                "check --frontal-camera / --in-domain-yaw.") from None

        return self._once("views", make)

    def frontal_camera(self):
        """The frontal orbit view (yaw = pitch = 0) with the frontal camera's intrinsics."""

        def make():
            import torch

            from nerfeditor_ns.edit.views import cameras_like

            views = self.views()
            return cameras_like(views.cameras_in[0:1], views.geometry.orbit_c2w(torch.zeros(1), torch.zeros(1)))

        return self._once("frontal_camera", make)

    def view_sets(self) -> List[Tuple[str, Any]]:
        """``[("front", frontal camera), ("in", V_in), ("out", V_out)]`` (no "out" without out-of-domain views): the
        tags of every per-view result (``rgb_in``, ``windows_out``, ``mask_front``, ...)."""

        def make():
            views = self.views()
            sets = [("front", self.frontal_camera()), ("in", views.cameras_in)]
            if views.cameras_out is not None:
                sets.append(("out", views.cameras_out))
            return sets

        return self._once("view_sets", make)

    # --------------------------------------------------------------------------------------------- networks
    def network(self, name: str, loader: Callable[[Path], Any]) -> Any:
        """The optional network ``name`` (a key of ``NETWORK_SOURCES``), loaded once through :func:`load_network`
        and kept in ``nets``; ``None`` when its file was not given."""
        path = getattr(self.networks, name)
        if path is None:
            return None
        if name not in self.nets:
            self.nets[name] = load_network(name, path, loader)
        return self.nets[name]

    def generator(self):
        """The generator the edit runs on: the StyleGAN2 of --generator, or for --style-image the art generator of
        --style-generator (it alone makes that mode's crops, codes and guides)."""
        from nerfeditor_ns.gan.checkpoints import load_generator

        name = "style_generator" if self.mode == "style_image" else "generator"
        return self.network(name, lambda p: load_generator(p, device=self.device))

    def generator_file(self) -> Path:
        """The file of :meth:`generator`."""
        return self.networks.style_generator if self.mode == "style_image" else self.networks.generator

    def edit_generator(self) -> Tuple[Path, Any]:
        """(file, generator) that draws the edited images (the same as :meth:`generator`)."""
        return self.generator_file(), self.generator()

    def perceptual(self):
        """VGG16 perceptual loss (None without --vgg)."""
        from nerfeditor_ns.gan.losses import PerceptualLoss

        return self.network("vgg", lambda p: PerceptualLoss(p).to(self.device))

    def identity(self):
        """ArcFace identity loss (None without --arcface)."""
        from nerfeditor_ns.gan.losses import IdentityLoss

        return self.network("arcface", lambda p: IdentityLoss(p).to(self.device))

    def encoder(self):
        """The e4e encoder, checked against the generator's W+ shape (None without --encoder)."""
        if self.networks.encoder is None:
            return None
        if "encoder" not in self.nets:
            import torch

            from nerfeditor_ns.gan.encoder import load_encoder

            G = self.generator()
            E = load_network("encoder", self.networks.encoder, lambda p: load_encoder(p).to(self.device))
            with torch.no_grad():
                probe = E(torch.zeros(1, 3, 256, 256, device=self.device))
            if tuple(probe.shape[1:]) != (G.num_ws, G.w_dim):
                raise EditError(
                    f"--encoder {self.networks.encoder} predicts codes of shape {tuple(probe.shape[1:])} but the "
                    f"generator takes [num_ws={G.num_ws}, w_dim={G.w_dim}].",
                    "use the e4e encoder trained for this generator, or leave --encoder out (projection is used).",
                )
            self.nets["encoder"] = E
        return self.nets["encoder"]

    def clip(self):
        """The open_clip model of --clip / --clip-model (never downloaded)."""
        from nerfeditor_ns.gan import edits

        try:
            return self.network("clip", lambda p: edits.load_clip(self.networks.clip_model, p, device=self.device))
        except ImportError as err:
            raise EditError(str(err), f"install the optional CLIP dependency: {edits.CLIP_INSTALL_HINT}.") from None

    def explicit_hidden_mapper(self, generator) -> Any:
        """The mapper given with --hidden-mapper, checked against ``generator`` (None when not given)."""
        from nerfeditor_ns.gan.hidden_mapper import load_hidden_mapper

        return self.network("hidden_mapper", lambda p: load_hidden_mapper(p, generator=generator, device=self.device))

    # ------------------------------------------------------------------------------------------------ steps
    def scene_identity(self) -> Dict[str, Any]:
        """The original run as scene-cache keys see it: its config.yml's SHA-256 and its newest checkpoint (and, for
        a chained edit, how many edits its base holds: the scene is the edited run's alpha = 1)."""

        def make():
            from nerfeditor_ns.edit.finetune import latest_checkpoint

            config = Path(self.args.load_config)
            ckpt = latest_checkpoint(config.absolute().parent / "nerfstudio_models")
            identity = {"config": file_sha256(config), "checkpoint": None if ckpt is None else file_identity(ckpt)}
            if self.checked.chain:
                identity["edits_in_base"] = len(self.checked.chain)
            return identity

        return self._once("scene_identity", make)

    def generator_sha(self) -> str:
        """SHA-256 of the generator file (:meth:`generator_file`, computed once)."""
        return self._once("generator_sha", lambda: file_sha256(self.generator_file()))

    def _step_key(self, name: str, inputs: Dict[str, Any]) -> str:
        plan = list(self.plan)
        scene = SCENE_STEPS.get(name)
        if scene is None:  # edit-specific: chained to every earlier step and to the edit itself
            previous = [self.keys[s] for s in plan[: plan.index(name)] if s in self.keys]
            return step_key(name, inputs, previous, self.checked.spec)
        devices = {"gan": str(self.device)}
        if scene.nerf:
            devices["nerf"] = str(self.original()[1].device)
        return scene_step_key(name, inputs, {s: self.keys[s] for s in scene.needs}, self.scene_identity(), devices,
                              self.generator_sha() if scene.generator else "")

    def _from_scene_cache(self, name: str, key: str, path: Path) -> Tuple[Any, Optional[float], str]:
        """(result, seconds it took when computed, where) of a scene-cache entry, its files copied into the edit;
        (None, None, "") when there is none or it cannot be read (a damaged entry is dropped)."""
        import pickle

        entry = self.scene_cache.lookup(name, key) if self.scene_cache is not None else None
        if entry is None:
            return None, None, ""
        try:
            result = safe_torch_load(entry.result)
            for relative in entry.files:
                copy_file(entry.file(relative), self.run.work / relative)
            link_or_copy(entry.result, path)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:  # damaged, or removed
            # meanwhile by `ns-edit cache clean`: recompute
            self.console.print(f"[yellow]note:[/yellow] the scene cache entry {entry.path} cannot be used "
                               f"({type(err).__name__}: {err}); computing the step again.")
            self.scene_cache.discard(entry)
            return None, None, ""
        entry.touch()
        return result, entry.meta.get("seconds"), f"scene cache {entry.path}"

    def _to_scene_cache(self, name: str, key: str, path: Path, inputs: Dict[str, Any], seconds: float) -> None:
        files = {rel: self.run.work / rel for rel in SCENE_STEPS[name].files if (self.run.work / rel).is_file()}
        meta = {"seconds": round(seconds, 3), "inputs": inputs, "scene": self.scene_identity(),
                "edit": str(self.run.final), "original_run": str(Path(self.args.load_config).absolute().parent)}
        try:
            self.scene_cache.store(name, key, path, files, meta)
        except OSError as err:
            self.console.print(f"[yellow]note:[/yellow] could not store {name} in the scene cache "
                               f"{self.scene_cache.root} ({err}); later edits will compute it again.")

    def step(self, name: str, inputs: Dict[str, Any], compute: Callable[[], Dict[str, Any]],
             oom_flags: Sequence[str] = ("--render-chunk",)) -> Dict[str, Any]:
        """Run step ``name`` unless its result with the same key is cached; returns its result.

        Edit-independent steps (:data:`~nerfeditor_ns.edit.scene_steps.SCENE_STEPS`) are looked up in the edit's
        own cache (a resumed edit), then in the scene cache beside the original run, and stored there once computed;
        the other steps only in the edit's cache. ``oom_flags``: the flags that lower its memory use, named when it
        runs out of memory."""
        started, cpu_started = time.time(), time.process_time()
        index = list(self.plan).index(name) + 1
        title = f"[{index}/{len(self.plan)}] {name}"
        key = self._step_key(name, inputs)
        self.keys[name] = key
        path = self.run.cache / f"{name}.pt"
        result, seconds, where, source = None, None, "", "computed"
        if self.run.is_done(name, key) and path.exists():
            result, seconds, where, source = safe_torch_load(path), self.run.seconds(name), path.name, "edit cache"
        elif name in SCENE_STEPS:
            result, seconds, where = self._from_scene_cache(name, key, path)
            source = "scene cache"
        if result is not None:
            self.console.print(f"[dim]{title}: cached result found, skipped ({where})[/dim]")
        else:
            source = "computed"
            self.console.rule(f"[bold]{title}")
            seed_everything(self.args.seed)
            with out_of_memory_hint(name, list(oom_flags)):
                result = compute()
            atomic_torch_save(result, path)
            seconds = time.time() - started
            if name in SCENE_STEPS and self.scene_cache is not None:
                self._to_scene_cache(name, key, path, inputs, seconds)
            self.console.print(f"{title}: done in {seconds:.1f}s")
        wall = time.time() - started
        self.run.mark_done(name, key, wall if seconds is None else seconds,
                           {"source": source, "wall_s": round(wall, 3),
                            "cpu_s": round(time.process_time() - cpu_started, 3)})
        self.results[name] = result
        check_stop_after(name)
        return result
