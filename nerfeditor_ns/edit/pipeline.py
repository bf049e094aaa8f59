"""The steps of ``ns-edit`` (paper Sec. 3, Fig. 2), each cached in the new run's ``.partial/cache`` and skipped
when its result exists with the same inputs.

1. ``render``   load the run (nerfstudio ``eval_setup``); choose the frontal view; render in-domain V_in and
                out-of-domain V_out (image, pose) pairs (``views.py``, ``render.py``).
2. ``crops``    one 3D subject box projected into every view -> square crops at the GAN resolution (``crops.py``).
3. ``masks``    foreground masks from the NeRF (``masks.py``); computed this early because the stylized crops are
                pasted back through them (issue step 5; they are saved beside the guide images).
4. ``invert``   invert the frontal crop: encoder + refinement MLP, or projection when there is no encoder (Sec. 3.2).
5. ``adjustor`` train the latent code adjustor on the in-domain pairs with the differentiable decomposition (Eq. 1).
5b. ``gen_finetune`` finetune a copy of the generator's synthesis weights on the in-domain pairs at the adjusted
                codes (pivotal tuning, paper Sec. 4 / Tab. 5; ``gan/generator_finetune.py``).
6. ``w_style``  the edited frontal code for the chosen EDIT.
7. ``guides``   the edit's change transferred onto the renders (``guide_transfer.py``): in-domain
                G'(w_style + V(k*d)) - G'(w_frontal + V(k*d)), out-of-domain G'_style(H(crop), w_style) -
                G'_style(H(crop), w_frontal), G' the finetuned generator; blended with the soft foreground mask.
                (--style-image: the art generator's crops are pasted back as before.)
8. ``finetune`` a copy of the NeRF finetuned on the guide sets with the editing losses (Eqs. 2-6), ``finetune.py``.
9. ``outputs``  before/after grid, turntable video, metrics.json; then ``edit.json`` and the atomic rename of
                ``<out>.partial`` to ``<out>``.

Module-level imports are light (no torch / nerfstudio): :func:`validate_inputs` runs before anything heavy so that
bad input is refused in well under a second.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from nerfeditor_ns.edit.errors import EditError, NotANerfEditorRunError, check_stop_after, out_of_memory_hint
from nerfeditor_ns.edit.finetune import NERFEDITOR_METHODS
from nerfeditor_ns.edit.networks import NetworkPaths, check_networks_for_mode, resolve_networks
from nerfeditor_ns.edit.run_dir import EDIT_RECORD, RunDir, atomic_write_text, step_key

if TYPE_CHECKING:  # pragma: no cover
    from nerfeditor_ns.edit.cli import EditArgs, TrainMapperArgs

STEPS = ("render", "crops", "masks", "invert", "adjustor", "gen_finetune", "w_style", "guides", "finetune", "outputs")
GUIDES_DIRNAME = "guides"
MIN_MASK_FRACTION = 0.01  # below this foreground fraction of the frontal view the NeRF-based masks are not trusted
_DIRECTION_PC = re.compile(r"^pc:(\d+):([+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)$")
_FLOAT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


# ------------------------------------------------------------------------------------------------ input checks
def read_run_header(config_path: Path) -> Dict[str, str]:
    """Check that ``config_path`` is a nerfeditor run's ``config.yml`` WITHOUT constructing it (no code runs).

    Returns ``{"method_name": ...}``. Raises :class:`NotANerfEditorRunError` with what to pass instead.
    """
    path = Path(config_path)
    hint = "pass the config.yml of a run trained with `ns-train nerfeditor` (outputs/<scene>/nerfeditor/<run>/config.yml)."
    if not path.exists():
        raise NotANerfEditorRunError(f"--load-config {path} does not exist.", hint)
    if path.is_dir():
        if (path / "config.yml").is_file():
            raise NotANerfEditorRunError(f"--load-config {path} is a directory.", f"pass {path / 'config.yml'}.")
        raise NotANerfEditorRunError(f"--load-config {path} is a directory, not a config.yml.", hint)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise NotANerfEditorRunError(f"--load-config {path} cannot be read as text ({err}).", hint) from None
    if "TrainerConfig" not in text:
        raise NotANerfEditorRunError(f"{path} is not a nerfstudio run config (no TrainerConfig in it).", hint)
    match = re.search(r"^method_name:\s*['\"]?([^'\"\s]+)", text, flags=re.MULTILINE)
    method = match.group(1) if match else "<none>"
    if method not in NERFEDITOR_METHODS:
        raise NotANerfEditorRunError(
            f"{path} is a '{method}' run, not a nerfeditor run: ns-edit needs the conditional NeRF "
            f"({' / '.join(NERFEDITOR_METHODS)}) to hold the original and the edited scene.",
            "train the scene with `ns-train nerfeditor --data <data>` and pass that run's config.yml.",
        )
    return {"method_name": method}


def check_image(path: Path, flag: str) -> None:
    """Refuse a missing or unreadable image (PIL decodes it fully)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EditError(f"{flag} {path} does not exist (or is not a file).", f"pass an existing image file to {flag}.")
    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise EditError(
            f"{flag} {path} cannot be read as an image ({err}).", "pass a PNG or JPEG image (RGB or RGBA)."
        ) from None


def check_direction(spec: str) -> None:
    """Syntax of ``--direction``: ``pc:INDEX:STRENGTH`` or ``FILE.pt:STRENGTH`` (file must exist)."""
    fix = "use --direction pc:INDEX:STRENGTH (e.g. pc:7:+3) or --direction FILE.pt:STRENGTH (e.g. smile.pt:2.0)."
    spec = spec.strip()
    if spec.startswith("pc:"):
        if not _DIRECTION_PC.match(spec):
            raise EditError(f"--direction '{spec}' is not of the form pc:INDEX:STRENGTH.", fix)
        return
    if ":" not in spec:
        raise EditError(f"--direction '{spec}' has no strength.", fix)
    file_part, strength = spec.rsplit(":", 1)
    if not _FLOAT.match(strength):
        raise EditError(f"--direction '{spec}': strength '{strength}' is not a number.", fix)
    if not Path(file_part).expanduser().is_file():
        raise EditError(f"--direction file {file_part} does not exist.", fix)


def edit_spec(args: "EditArgs", mode: str) -> Dict[str, Any]:
    """What the edit is (recorded in edit.json and part of every cache key)."""
    value = getattr(args, mode)
    spec: Dict[str, Any] = {"mode": mode, "value": str(value)}
    if mode in ("reference_image", "edited_image", "style_image"):
        from nerfeditor_ns.edit.networks import sha256_file

        spec["sha256"] = sha256_file(Path(value))
    if mode == "reference_image":
        spec["mix_layer"] = args.mix_layer
    return spec


def default_output_dir(config_path: Path, mode: str, spec: Dict[str, Any]) -> Path:
    """``<run>-edit-<kind>-<hash>`` beside the original run (deterministic, so re-running resumes)."""
    run = Path(config_path).absolute().parent
    return run.parent / f"{run.name}-edit-{mode.replace('_', '-')}-{step_key(spec)[:8]}"


@dataclass
class ValidatedEdit:
    """Everything :func:`validate_inputs` established before the heavy work starts."""

    mode: str
    spec: Dict[str, Any]
    method_name: str
    networks: NetworkPaths
    notes: List[str]
    run: RunDir


def validate_inputs(args: "EditArgs") -> ValidatedEdit:
    """All checks that need no torch: the edit, the run config, images, networks, the output directory."""
    mode = args.edit_mode()
    if mode == "prompt" and not str(args.prompt).strip():
        raise EditError("--prompt is empty.", 'describe the edit, e.g. --prompt "tanned skin".')
    header = read_run_header(args.load_config)
    for flag, value in (("--reference-image", args.reference_image), ("--edited-image", args.edited_image),
                        ("--style-image", args.style_image)):
        if value is not None:
            check_image(value, flag)
    if args.direction is not None:
        check_direction(args.direction)
    for name in ("num_in_yaw", "num_in_pitch", "projection_steps", "adjustor_steps", "adjustor_batch", "num_components",
                 "clip_steps", "render_chunk", "video_frames"):
        if int(getattr(args, name)) < 1:
            raise EditError(f"--{name.replace('_', '-')} must be at least 1.", "pass a positive number.")
    if args.num_out_domain < 0:
        raise EditError("--num-out-domain must be >= 0.", "pass 0 to skip out-of-domain views.")
    if not args.render_scale > 0:
        raise EditError("--render-scale must be positive.", "e.g. --render-scale 0.5 renders at half size.")
    if args.finetune_steps is not None and args.finetune_steps < 1:
        raise EditError("--finetune-steps must be at least 1.", "pass a positive number (default: 1/4 of the run's).")
    if args.generator_finetune_steps < 0:
        raise EditError("--generator-finetune-steps must be >= 0.", "pass 0 to skip generator finetuning.")
    if not args.finetune_lr_scale > 0:
        raise EditError("--finetune-lr-scale must be positive.", "pass e.g. 0.1 (the default) or 1 for the run's rates.")
    flags = {name: getattr(args, name) for name in ("generator", "encoder", "arcface", "clip", "vgg",
                                                   "style_generator", "hidden_mapper", "clip_model", "cache_dir")}
    networks = resolve_networks(flags, args.network_config)
    notes = check_networks_for_mode(networks, mode)
    spec = edit_spec(args, mode)
    out = args.output_dir if args.output_dir is not None else default_output_dir(args.load_config, mode, spec)
    out = Path(out).absolute()
    original_dir = Path(args.load_config).absolute().parent
    if out == original_dir or original_dir in out.parents:
        raise EditError(f"--output-dir {out} is inside the original run.", "choose a directory outside it.")
    run = RunDir(out, overwrite=args.overwrite)
    run.check_output_free()
    return ValidatedEdit(mode, spec, header["method_name"], networks, notes, run)


# ------------------------------------------------------------------------------------------------ networks
_LOAD_ERRORS: Tuple[type, ...] = (ValueError, RuntimeError, KeyError, OSError, EOFError, TypeError)


def load_network(name: str, path: Path, loader: Callable[[Path], Any]) -> Any:
    """Load a network file; a wrong or corrupt file becomes an :class:`EditError` naming the flag."""
    import pickle

    from nerfeditor_ns.edit.networks import NETWORK_SOURCES

    flag, env, what = NETWORK_SOURCES[name]
    try:
        return loader(path)
    except (pickle.UnpicklingError, *_LOAD_ERRORS) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EditError(
            f"{flag} {path} could not be loaded as a {what}: {first}",
            f"check that {flag} (or ${env}) points at the right file in a supported format.",
        ) from None


def read_image(path: Path, size: int) -> "Any":
    """An image file as a [1,3,size,size] tensor in [-1,1] (centre square crop, RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((size, size), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None] * 2 - 1


def save_image(image: "Any", path: Path) -> None:
    """Save [H,W,3] in [0,1] or [1,3,H,W] / [3,H,W] in [-1,1] as PNG."""
    import numpy as np
    from PIL import Image

    t = image.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    if t.ndim == 3 and t.shape[0] == 3 and t.shape[-1] != 3:
        t = (t.permute(1, 2, 0) + 1) / 2
    arr = (t.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# ------------------------------------------------------------------------------------------------ the edit
@dataclass
class EditContext:
    """State shared by the steps; heavy objects are loaded on first use."""

    args: "EditArgs"
    checked: ValidatedEdit
    device: Any = None
    console: Any = None
    _pipeline: Any = None
    _config: Any = None
    _generator: Any = None
    _style_generator: Any = None
    _views: Any = None
    results: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    keys: Dict[str, str] = field(default_factory=dict)
    nets: Dict[str, Any] = field(default_factory=dict)

    # --------------------------------------------------------------------------------------- lazy objects
    @property
    def run(self) -> RunDir:
        return self.checked.run

    @property
    def networks(self) -> NetworkPaths:
        return self.checked.networks

    def network(self, name: str, loader: Callable[[Path], Any]) -> Any:
        """The optional network ``name`` (a key of ``NETWORK_SOURCES``), loaded once through :func:`load_network`
        and kept in ``nets``; ``None`` when its file was not given."""
        path = getattr(self.networks, name)
        if path is None:
            return None
        if name not in self.nets:
            self.nets[name] = load_network(name, path, loader)
        return self.nets[name]

    def original(self):
        """(config, pipeline) of the original run, loaded with nerfstudio's ``eval_setup``."""
        if self._pipeline is None:
            self._config, self._pipeline = load_original_run(self.args.load_config, self.args.render_chunk)
        return self._config, self._pipeline

    def generator(self):
        if self._generator is None:
            from nerfeditor_ns.gan.checkpoints import load_generator

            G = load_network("generator", self.networks.generator, lambda p: load_generator(p, device=self.device))
            self._generator = G
        return self._generator

    def style_generator(self):
        """The art generator for --style-image (same architecture as --generator)."""
        if self._style_generator is None:
            from nerfeditor_ns.gan.checkpoints import load_generator

            G = self.generator()
            Gs = load_network(
                "style_generator", self.networks.style_generator, lambda p: load_generator(p, device=self.device)
            )
            if (Gs.num_ws, Gs.w_dim, Gs.resolution) != (G.num_ws, G.w_dim, G.resolution):
                raise EditError(
                    f"--style-generator has a different architecture (num_ws {Gs.num_ws}, w_dim {Gs.w_dim}, "
                    f"{Gs.resolution}px) than --generator ({G.num_ws}, {G.w_dim}, {G.resolution}px).",
                    "use an art StyleGAN2 finetuned from the --generator checkpoint.",
                )
            self._style_generator = Gs
        return self._style_generator

    def cameras(self):
        """Training cameras of the original run."""
        _, pipeline = self.original()
        return pipeline.datamanager.train_dataset.cameras

    def views(self):
        """In-/out-of-domain view set (deterministic given the run and the geometry flags)."""
        if self._views is None:
            from nerfeditor_ns.edit.views import make_view_set

            cameras = self.cameras()
            if self.args.render_scale != 1.0:
                cameras = _rescaled(cameras, self.args.render_scale)
            try:
                self._views = make_view_set(
                    cameras,
                    frontal_index=self.args.frontal_camera,
                    in_domain_yaw=self.args.in_domain_yaw,
                    in_domain_pitch=self.args.in_domain_pitch,
                    num_in_yaw=self.args.num_in_yaw,
                    num_in_pitch=self.args.num_in_pitch,
                    num_out=self.args.num_out_domain,
                )
            except ValueError as err:
                raise EditError(f"Cannot build the edit views: {err}", "check --frontal-camera / --in-domain-yaw.") from None
        return self._views

    def frontal_camera(self):
        """The frontal orbit view (yaw = pitch = 0) with the frontal camera's intrinsics."""
        import torch

        from nerfeditor_ns.edit.views import cameras_like

        views = self.views()
        geo = views.geometry
        return cameras_like(views.cameras_in[0:1], geo.orbit_c2w(torch.zeros(1), torch.zeros(1)))

    # ------------------------------------------------------------------------------------------ steps
    def step(self, name: str, inputs: Dict[str, Any], compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Run step ``name`` unless its cached result (same inputs, same previous steps) exists; returns its result."""
        index = STEPS.index(name) + 1
        previous = [self.keys[s] for s in STEPS[: index - 1] if s in self.keys]
        key = step_key(name, inputs, previous, self.checked.spec)
        self.keys[name] = key
        path = self.run.cache / f"{name}.pt"
        title = f"[{index}/{len(STEPS)}] {name}"
        if self.run.is_done(name, key) and path.exists():
            from nerfeditor_ns.edit.run_dir import safe_torch_load

            self.console.print(f"[dim]{title}: cached result found, skipped ({path.name})[/dim]")
            result = safe_torch_load(path)
        else:
            self.console.rule(f"[bold]{title}")
            started = time.time()
            with out_of_memory_hint(name, OOM_FLAGS.get(name, ["--render-chunk"])):
                result = compute()
            from nerfeditor_ns.edit.run_dir import atomic_torch_save

            atomic_torch_save(result, path)
            self.run.mark_done(name, key, time.time() - started)
            self.console.print(f"{title}: done in {time.time() - started:.1f}s")
        self.results[name] = result
        check_stop_after(name)
        return result


OOM_FLAGS = {
    "render": ["--render-chunk", "--render-scale"],
    "crops": ["--render-scale"],
    "masks": ["--render-scale"],
    "invert": ["--projection-steps (no effect on memory)", "--device cpu"],
    "adjustor": ["--adjustor-batch", "--device cpu"],
    "gen_finetune": ["--adjustor-batch", "--device cpu"],
    "w_style": ["--device cpu"],
    "guides": ["--adjustor-batch", "--device cpu"],
    "finetune": ["--render-chunk", "--render-scale"],
    "outputs": ["--render-chunk", "--video-frames"],
}


def _rescaled(cameras, scale: float):
    import copy

    cams = copy.deepcopy(cameras)
    cams.rescale_output_resolution(scale)
    return cams


def load_original_run(config_path: Path, render_chunk: int):
    """nerfstudio ``eval_setup`` of the original run, after checking what would otherwise fail deep inside it."""
    import yaml
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path)
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)  # nerfstudio's own format (its own run file)
    ckpt_dir = Path(config.get_checkpoint_dir())
    if not ckpt_dir.is_dir() or not list(ckpt_dir.glob("step-*.ckpt")):
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
    import contextlib
    import io

    from nerfeditor_ns.edit.finetune import nerfstudio_checkpoint_globals

    with contextlib.redirect_stdout(io.StringIO()), nerfstudio_checkpoint_globals():
        config, pipeline, _, _ = eval_setup(config_path, eval_num_rays_per_chunk=render_chunk, test_mode="test")
    return config, pipeline


# ------------------------------------------------------------------------------------------------ step bodies
def _net_id(path: Optional[Path]) -> Optional[List[Any]]:
    """Cheap identity of a network file for cache keys (path, size, mtime); edit.json records the SHA-256."""
    if path is None:
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, int(st.st_mtime)]


def step_render(ctx: EditContext) -> Dict[str, Any]:
    """Step 1: render V_in, V_out and the frontal view of the original scene (alpha = 0)."""
    from nerfeditor_ns.edit.render import render_views

    a = ctx.args
    inputs = dict(
        frontal=a.frontal_camera, yaw=a.in_domain_yaw, pitch=a.in_domain_pitch, n_yaw=a.num_in_yaw,
        n_pitch=a.num_in_pitch, n_out=a.num_out_domain, scale=a.render_scale,
        ckpt=_checkpoint_id(a.load_config),
    )

    def compute():
        _, pipeline = ctx.original()
        views = ctx.views()
        out: Dict[str, Any] = {"frontal_index": int(views.geometry.frontal_index)}
        sets = [("front", ctx.frontal_camera()), ("in", views.cameras_in)]
        if views.cameras_out is not None:
            sets.append(("out", views.cameras_out))
        for tag, cams in sets:
            r = render_views(pipeline, cams, alpha=0.0, chunk=a.render_chunk, description=f"Rendering {tag} views")
            out.update({f"rgb_{tag}": r["rgb"], f"depth_{tag}": r["depth"], f"acc_{tag}": r["accumulation"]})
        return out

    return ctx.step("render", inputs, compute)


def _checkpoint_id(config_path: Path) -> List[Any]:
    run = Path(config_path).absolute().parent
    ckpts = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))
    if not ckpts:
        return [str(run)]
    st = ckpts[-1].stat()
    return [str(ckpts[-1]), st.st_size, int(st.st_mtime)]


def step_crops(ctx: EditContext) -> Dict[str, Any]:
    """Step 2: one 3D subject box projected into every view; square crops at the GAN resolution."""

    from nerfeditor_ns.edit.crops import extract_crops, project_box

    a = ctx.args
    render = ctx.results["render"]

    def compute():
        views = ctx.views()
        geo = views.geometry
        G = ctx.generator()
        res = int(G.resolution)
        geo_front = _frontal_geometry(geo)
        from nerfeditor_ns.edit.crops import SubjectBox, box_from_render

        box = box_from_render(geo_front, ctx.frontal_camera(), render["depth_front"][0], render["acc_front"][0])
        box = SubjectBox(box.centre, box.half_size * a.box_scale, box.rotation)
        out: Dict[str, Any] = {"box": box.to_dict(), "resolution": res}
        sets = [("front", ctx.frontal_camera()), ("in", views.cameras_in)]
        if views.cameras_out is not None:
            sets.append(("out", views.cameras_out))
        try:
            for tag, cams in sets:
                windows = project_box(box, cams)
                out[f"windows_{tag}"] = windows
                out[f"crops_{tag}"] = extract_crops(render[f"rgb_{tag}"], windows, res)
        except ValueError as err:
            raise EditError(f"Cannot crop the subject: {err}", "adjust --box-scale or --frontal-camera.") from None
        # is there a subject in the frontal crop at all? (a face generator needs a face there)
        acc = extract_crops(render["acc_front"].expand(-1, -1, -1, 3), out["windows_front"], res)
        coverage = float(((acc[:, 0] + 1) / 2 > 0.5).float().mean())
        out["frontal_coverage"] = coverage
        if coverage < 0.05:
            raise EditError(
                f"No subject found in the frontal view (only {coverage:.0%} of the frontal crop is occupied); a face "
                "generator needs the face there.",
                "pass --frontal-camera INDEX (a training camera facing the subject) and/or adjust --box-scale.",
            )
        save_image(out["crops_front"], ctx.run.work / "frontal.png")
        return out

    return ctx.step("crops", dict(box_scale=a.box_scale, net=_net_id(ctx.networks.generator)), compute)


def _frontal_geometry(geo):
    """The capture geometry with the frontal orbit view as camera 0 (the frontal camera batch has one camera)."""
    import dataclasses

    return dataclasses.replace(geo, frontal_index=0)


def step_masks(ctx: EditContext) -> Dict[str, Any]:
    """Step 5 (computed early: the guides are pasted through them): foreground masks from the NeRF."""
    from nerfeditor_ns.edit.crops import SubjectBox
    from nerfeditor_ns.edit.masks import masks_from_render

    render, crops = ctx.results["render"], ctx.results["crops"]

    def compute():
        from nerfeditor_ns.edit.crops import paste_mask

        views = ctx.views()
        box = SubjectBox.from_dict(crops["box"])
        out: Dict[str, Any] = {}
        sets = [("front", ctx.frontal_camera()), ("in", views.cameras_in)]
        if views.cameras_out is not None:
            sets.append(("out", views.cameras_out))
        for tag, cams in sets:
            out[f"mask_{tag}"] = masks_from_render(cams, render[f"depth_{tag}"], render[f"acc_{tag}"], box)
        out["source"] = "nerf"
        if float(out["mask_front"].mean()) < MIN_MASK_FRACTION:
            # the NeRF's surface does not fall inside the subject box (e.g. an under-trained run): fall back to the
            # feathered crop windows, the region the stylized crops are pasted into
            ctx.console.print(
                f"[yellow]note:[/yellow] the NeRF-based foreground mask of the frontal view is nearly empty "
                f"({float(out['mask_front'].mean()):.1%}); using the feathered crop windows as masks instead "
                "(adjust --box-scale if the subject box is off)."
            )
            for tag, _ in sets:
                h, w = render[f"rgb_{tag}"].shape[1:3]
                out[f"mask_{tag}"] = paste_mask(crops[f"windows_{tag}"], h, w)
            out["source"] = "crop_window"
        return out

    return ctx.step("masks", {}, compute)


def _perceptual(ctx: EditContext):
    """VGG16 perceptual loss (None without --vgg)."""
    from nerfeditor_ns.gan.losses import PerceptualLoss

    return ctx.network("vgg", lambda p: PerceptualLoss(p).to(ctx.device))


def _identity(ctx: EditContext):
    """ArcFace identity loss (None without --arcface)."""
    from nerfeditor_ns.gan.losses import IdentityLoss

    return ctx.network("arcface", lambda p: IdentityLoss(p).to(ctx.device))


def _explicit_hidden_mapper(ctx: EditContext, generator) -> "Any":
    """The mapper given with --hidden-mapper, checked against ``generator`` (None when not given)."""
    from nerfeditor_ns.gan import hidden_mapper as hm

    return ctx.network("hidden_mapper", lambda p: hm.load_hidden_mapper(p, generator=generator, device=ctx.device))


def _encoder(ctx: EditContext):
    """The e4e encoder, checked against the generator's W+ shape (None without --encoder)."""
    if ctx.networks.encoder is None:
        return None
    if "encoder" not in ctx.nets:
        import torch

        from nerfeditor_ns.gan.encoder import load_encoder

        G = ctx.generator()
        E = load_network("encoder", ctx.networks.encoder, lambda p: load_encoder(p).to(ctx.device))
        with torch.no_grad():
            probe = E(torch.zeros(1, 3, 256, 256, device=ctx.device))
        if tuple(probe.shape[1:]) != (G.num_ws, G.w_dim):
            raise EditError(
                f"--encoder {ctx.networks.encoder} predicts codes of shape {tuple(probe.shape[1:])} but the generator "
                f"takes [num_ws={G.num_ws}, w_dim={G.w_dim}].",
                "use the e4e encoder trained for this generator, or leave --encoder out (projection is used).",
            )
        ctx.nets["encoder"] = E
    return ctx.nets["encoder"]


def preflight(ctx: EditContext) -> None:
    """Load and check every given network and the edit's parameters BEFORE any work or any file is written, so
    that a wrong file or value is refused with nothing half-written."""
    from nerfeditor_ns.gan import edits

    a, mode = ctx.args, ctx.checked.mode
    G = ctx.generator()
    if mode == "style_image":
        ctx.style_generator()
    _encoder(ctx)
    _perceptual(ctx)
    _identity(ctx)
    if mode == "prompt":
        load_clip_model(ctx)
    _explicit_hidden_mapper(ctx, ctx.style_generator() if mode == "style_image" else G)
    if mode == "reference_image" and not 0 <= a.mix_layer <= G.num_ws:
        raise EditError(f"--mix-layer {a.mix_layer} is outside 0..{G.num_ws} (the generator has {G.num_ws} W+ rows).",
                        f"pick a layer between 0 and {G.num_ws}.")
    if mode == "direction":
        try:
            spec = edits.parse_direction_spec(a.direction)
        except ValueError as err:
            raise EditError(f"--direction: {err}", "e.g. --direction pc:7:+3 or --direction smile.pt:2.0.") from None
        if spec.kind == "pc":
            k = min(a.num_components, int(G.w_dim))
            if not 0 <= int(spec.component) < k:
                raise EditError(f"--direction pc:{spec.component} is outside the {k} components of the decomposition.",
                                f"use a component below {k} or raise --num-components.")
        else:
            try:
                d = edits.load_direction(spec.path)
                edits.apply_direction(G.w_avg.detach().cpu().reshape(1, 1, -1).repeat(1, G.num_ws, 1), d, 1.0,
                                      spec.layers)
            except ValueError as err:
                raise EditError(f"--direction {a.direction}: {err}", "use a direction saved for this generator.") from None


def invert_image(ctx: EditContext, image: "Any", generator=None, use_encoder: bool = True) -> "Any":
    """W+ code of a [1,3,R,R] image in [-1,1]: e4e + refinement MLP (Sec. 3.2), else optimisation (projection)."""
    import torch

    G = generator if generator is not None else ctx.generator()
    image = image.to(ctx.device)
    perceptual = _perceptual(ctx)
    if use_encoder and ctx.networks.encoder is not None:
        from nerfeditor_ns.gan.encoder import RefinementMLP, refine_inversion

        E = _encoder(ctx)
        torch.manual_seed(ctx.args.seed)
        refiner = RefinementMLP(w_dim=G.w_dim, num_ws=G.num_ws).to(ctx.device)
        return refine_inversion(E, refiner, G, image, steps=ctx.args.projection_steps, perceptual=perceptual,
                                identity=_identity(ctx)).detach().cpu()
    from nerfeditor_ns.gan.projection import project

    return project(G, image, steps=ctx.args.projection_steps, perceptual=perceptual, seed=ctx.args.seed).detach().cpu()


def step_invert(ctx: EditContext) -> Dict[str, Any]:
    """Step 3a: invert the frontal crop."""
    crops = ctx.results["crops"]
    n = ctx.networks
    inputs = dict(steps=ctx.args.projection_steps, seed=ctx.args.seed, enc=_net_id(n.encoder), vgg=_net_id(n.vgg),
                  arc=_net_id(n.arcface))

    def compute():
        w = invert_image(ctx, crops["crops_front"])
        import torch

        with torch.no_grad():
            recon = ctx.generator().synthesis(w.to(ctx.device), noise_mode="const").cpu()
        save_image(recon, ctx.run.work / "frontal_inversion.png")
        return {"w_frontal": w[0]}

    return ctx.step("invert", inputs, compute)


def _adjustor_config(ctx: EditContext):
    from nerfeditor_ns.gan.adjustor import LatentCodeAdjustorConfig

    G = ctx.generator()
    return LatentCodeAdjustorConfig(num_components=min(ctx.args.num_components, int(G.w_dim)), seed=ctx.args.seed)


def _poses(theta, phi):
    import torch

    return torch.stack([theta, phi], dim=-1).to(torch.float32)


def step_adjustor(ctx: EditContext) -> Dict[str, Any]:
    """Step 3b: train the latent code adjustor on the in-domain (crop, pose) pairs (Eq. 1)."""
    from nerfeditor_ns.gan.adjustor import train_adjustor
    from nerfeditor_ns.gan.losses import ReconstructionLoss, ReconstructionLossConfig

    a = ctx.args
    crops, w = ctx.results["crops"], ctx.results["invert"]["w_frontal"]

    def compute():
        views = ctx.views()
        G = ctx.generator()
        loss = ReconstructionLoss(
            ReconstructionLossConfig(vgg_path=ctx.networks.vgg, arcface_path=ctx.networks.arcface,
                                     perceptual_weight=0.8 if ctx.networks.vgg else 0.0,
                                     identity_weight=0.1 if ctx.networks.arcface else 0.0)
        ).to(ctx.device)
        result = train_adjustor(
            G, w.to(ctx.device), crops["crops_in"], _poses(views.theta_in, views.phi_in), steps=a.adjustor_steps,
            loss=loss, config=_adjustor_config(ctx), batch_size=a.adjustor_batch, seed=a.seed,
        )
        state = {k: v.detach().cpu() for k, v in result.adjustor.state_dict().items()}
        return {"state": state, "final_loss": result.history["total"][-1]}

    return ctx.step("adjustor", dict(steps=a.adjustor_steps, batch=a.adjustor_batch, k=a.num_components,
                                     seed=a.seed), compute)


def load_adjustor(ctx: EditContext):
    """Rebuild the trained adjustor from the cached state."""
    from nerfeditor_ns.gan.adjustor import LatentCodeAdjustor

    state = ctx.results["adjustor"]["state"]
    adj = LatentCodeAdjustor(_adjustor_config(ctx), covariance=state["decomposition.cov_w"])
    adj.load_state_dict(state)
    return adj.to(ctx.device).eval()


# ---- generator finetuning (step gen_finetune) ---------------------------------------------------------------
GEN_FINETUNED_FILE = "generator_finetuned.pt"


def step_gen_finetune(ctx: EditContext) -> Dict[str, Any]:
    """Step 3b': finetune a copy of the generator's synthesis weights on the in-domain (crop, adjusted code) pairs
    (pivotal tuning; paper Sec. 4, Tab. 5); records the generator's fidelity to the crops before and after."""
    import torch

    from nerfeditor_ns.gan import generator_finetune as gf
    from nerfeditor_ns.gan.losses import ReconstructionLoss, ReconstructionLossConfig

    a = ctx.args
    crops, w = ctx.results["crops"], ctx.results["invert"]["w_frontal"]
    skip = ctx.checked.mode == "style_image"  # the art generator makes the guides; the face GAN is not used
    cfg = gf.GeneratorFinetuneConfig(steps=a.generator_finetune_steps, batch_size=a.adjustor_batch, seed=a.seed)

    def compute():
        if skip:
            return {"steps": 0, "skipped": "style_image: the art generator makes the guides"}
        G = ctx.generator()
        views = ctx.views()
        with torch.no_grad():
            codes, _ = load_adjustor(ctx)(w.to(ctx.device), _poses(views.theta_in, views.phi_in).to(ctx.device))
        codes, targets = codes.detach(), crops["crops_in"]
        loss = ReconstructionLoss(
            ReconstructionLossConfig(vgg_path=ctx.networks.vgg, arcface_path=ctx.networks.arcface,
                                     perceptual_weight=0.8 if ctx.networks.vgg else 0.0,
                                     identity_weight=0.1 if ctx.networks.arcface else 0.0)
        ).to(ctx.device)
        perceptual = _perceptual(ctx)
        before = gf.generator_fidelity(gf.generate(G, codes, a.adjustor_batch), targets, perceptual)
        result = gf.finetune_generator(G, codes, targets.to(ctx.device), cfg, loss=loss)
        after = gf.generator_fidelity(gf.generate(result.generator, codes, a.adjustor_batch), targets, perceptual)
        out: Dict[str, Any] = {"steps": cfg.steps, "lr": cfg.lr, "locality_weight": cfg.locality_weight,
                               "locality_radius_w": result.radius, "fidelity_before": before, "fidelity_after": after,
                               "codes": codes.cpu()}
        if cfg.steps > 0:
            gf.save_finetuned_synthesis(result.generator, G, ctx.run.cache / GEN_FINETUNED_FILE)
            ctx.nets["generator_finetuned"] = result.generator
            out["file"] = GEN_FINETUNED_FILE
            out["final_loss"] = result.history["total"][-1]
        ctx.console.print(
            f"generator fidelity to the in-domain crops: PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, "
            f"SSIM {before['ssim']:.3f} -> {after['ssim']:.3f}"
        )
        return out

    import dataclasses

    return ctx.step("gen_finetune", dict(dataclasses.asdict(cfg), skip=skip, vgg=_net_id(ctx.networks.vgg),
                                         arc=_net_id(ctx.networks.arcface)), compute)


def finetuned_generator(ctx: EditContext):
    """G': the generator finetuned by step gen_finetune (the given generator when it ran 0 steps)."""
    result = ctx.results["gen_finetune"]
    if "file" not in result:
        return ctx.generator()
    if "generator_finetuned" not in ctx.nets:
        from nerfeditor_ns.gan.generator_finetune import load_finetuned_generator

        G = load_finetuned_generator(ctx.generator(), ctx.run.cache / result["file"])
        ctx.nets["generator_finetuned"] = G.to(ctx.device)
    return ctx.nets["generator_finetuned"]


def step_w_style(ctx: EditContext) -> Dict[str, Any]:
    """Step 3c: the edited frontal code w_style for the chosen EDIT."""
    import torch

    from nerfeditor_ns.gan import edits

    a, mode = ctx.args, ctx.checked.mode
    w = ctx.results["invert"]["w_frontal"][None]
    inputs: Dict[str, Any] = dict(mode=mode, steps=a.projection_steps, clip_steps=a.clip_steps,
                                  clip=_net_id(ctx.networks.clip), clip_model=ctx.networks.clip_model,
                                  style=_net_id(ctx.networks.style_generator))

    def compute():
        G = ctx.generator()
        res = int(G.resolution)
        if mode == "reference_image":
            w_ref = invert_image(ctx, read_image(a.reference_image, res))
            w_style = edits.style_mix(w, w_ref, a.mix_layer)
        elif mode == "edited_image":
            w_style = invert_image(ctx, read_image(a.edited_image, res))
        elif mode == "style_image":
            w_style = invert_image(ctx, read_image(a.style_image, res), generator=ctx.style_generator(),
                                   use_encoder=False)
        elif mode == "direction":
            try:
                spec = edits.parse_direction_spec(a.direction)
            except ValueError as err:
                raise EditError(f"--direction: {err}", "e.g. --direction pc:7:+3 or --direction smile.pt:2.0.") from None
            vectors, values = (t.detach().float().cpu() for t in load_adjustor(ctx).basis())
            if spec.kind == "pc" and not 0 <= int(spec.component) < vectors.shape[1]:
                raise EditError(
                    f"--direction pc:{spec.component} is outside the {vectors.shape[1]} components of the decomposition.",
                    f"use a component below {vectors.shape[1]} or raise --num-components.",
                )
            try:
                w_style = edits.apply_direction_spec(w, spec, vectors, values)
            except ValueError as err:  # DirectionFileError, shape mismatch with the generator
                raise EditError(f"--direction {a.direction}: {err}", "use a direction saved for this generator.") from None
        elif mode == "prompt":
            clip = load_clip_model(ctx)
            w_style = edits.clip_optimize(G, w[0].to(ctx.device), a.prompt, clip, steps=a.clip_steps,
                                          id_loss=_identity(ctx)).w.detach().cpu()
        else:  # pragma: no cover - validate_inputs refuses other modes
            raise EditError(f"unknown edit mode {mode}")
        w_style = w_style.reshape(1, G.num_ws, G.w_dim).detach().cpu()
        gen = ctx.style_generator() if mode == "style_image" else G
        with torch.no_grad():
            img = gen.synthesis(w_style.to(ctx.device), noise_mode="const").cpu()
        save_image(img, ctx.run.work / "frontal_edited.png")
        return {"w_style": w_style[0]}

    return ctx.step("w_style", inputs, compute)


def load_clip_model(ctx: EditContext):
    """The open_clip model of --clip / --clip-model (never downloaded)."""
    from nerfeditor_ns.gan import edits

    try:
        return ctx.network("clip", lambda p: edits.load_clip(ctx.networks.clip_model, p, device=ctx.device))
    except ImportError as err:
        raise EditError(str(err), f"install the optional CLIP dependency: {edits.CLIP_INSTALL_HINT}.") from None


def hidden_mapper_for(ctx: EditContext, generator_path: Path, generator) -> "Any":
    """The trained hidden mapper for a generator: --hidden-mapper, a finished cached one, or train one now."""
    from nerfeditor_ns.gan import hidden_mapper as hm

    if ctx.networks.hidden_mapper is not None:
        return _explicit_hidden_mapper(ctx, generator)
    cached = find_cached_mapper(ctx.networks.cache_dir, generator_path)
    if cached is not None:
        ctx.console.print(f"hidden mapper: using the cached {cached}")
        return hm.load_hidden_mapper(cached, generator=generator, device=ctx.device)
    ctx.console.print(
        f"hidden mapper: none cached for {generator_path.name}; training one now ({ctx.args.mapper_steps} steps; "
        "`ns-edit train-mapper` does this ahead of time)."
    )
    config = mapper_config(vgg=ctx.networks.vgg, steps=ctx.args.mapper_steps, slim=ctx.networks.vgg is None,
                           seed=ctx.args.seed)
    return hm.get_or_train_hidden_mapper(generator_path, config, cache_dir=mapper_cache_dir(ctx.networks.cache_dir),
                                         generator=generator, device=ctx.device)


def mapper_cache_dir(root: Optional[Path]) -> Optional[Path]:
    """``<cache root>/hidden_mappers`` (None = the hidden mapper module's default)."""
    return None if root is None else Path(root) / "hidden_mappers"


def find_cached_mapper(root: Optional[Path], generator_path: Path) -> Optional[Path]:
    """Newest finished cached mapper trained for this generator file (any settings), if any."""
    from nerfeditor_ns.gan import hidden_mapper as hm
    from nerfeditor_ns.edit.run_dir import safe_torch_load

    directory = mapper_cache_dir(root) or hm.default_cache_dir()
    if not directory.is_dir():
        return None
    sha = hm.file_sha256(generator_path)
    for path in sorted(directory.glob(f"{sha}-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            if safe_torch_load(path).get("finished", False):
                return path
        except Exception:  # a damaged cache entry is skipped, not fatal
            continue
    return None


def mapper_config(vgg: Optional[Path], steps: int, slim: bool, seed: int = 0, batch: Optional[int] = None,
                  resolution: Optional[int] = None):
    """Hidden mapper settings used by ns-edit and ns-edit train-mapper (slim = narrow, shallow backbone)."""
    from nerfeditor_ns.gan.hidden_mapper import HiddenMapperConfig

    cfg = HiddenMapperConfig(num_iterations=int(steps), vgg_weights=None if slim else vgg, seed=seed)
    if slim:
        cfg.backbone_width_mult = 0.125
        cfg.backbone_stages = 3
        cfg.head_channels = 32
    if batch is not None:
        cfg.batch_size = int(batch)
    if resolution is not None:
        cfg.resolutions = (int(resolution),)
    cfg.save_every = max(1, min(cfg.save_every, int(steps)))
    return cfg


def step_guides(ctx: EditContext) -> Dict[str, Any]:
    """Step 4: the edit's change transferred onto the renders (``guide_transfer.py``), G' = the finetuned generator:
    in-domain G'(w_style + V(k*d)) - G'(w_frontal + V(k*d)) per pose; out-of-domain G'_style(H(crop), w_style) -
    G'_style(H(crop), w_frontal) through the hidden mapper of the given generator. --style-image keeps pasting the
    art generator's crops (I_in = G_art(w_style + V(k*d)), I_out = G_art_style(H(render), w_style))."""
    import torch

    from nerfeditor_ns.edit.crops import paste_crops
    from nerfeditor_ns.edit.guide_transfer import guides_from_crops, in_domain_crops, out_of_domain_crops

    a, mode = ctx.args, ctx.checked.mode
    render, crops, masks = ctx.results["render"], ctx.results["crops"], ctx.results["masks"]
    w_style = ctx.results["w_style"]["w_style"]
    w_frontal = ctx.results["invert"]["w_frontal"]
    gen_path = ctx.networks.style_generator if mode == "style_image" else ctx.networks.generator
    inputs = dict(mapper=_net_id(ctx.networks.hidden_mapper), gen=_net_id(gen_path), transfer="change")

    def compute_style():
        views = ctx.views()
        gen = ctx.style_generator()
        adjustor = load_adjustor(ctx)
        poses = _poses(views.theta_in, views.phi_in).to(ctx.device)
        crops_in = adjustor.generate(gen, w_style.to(ctx.device), poses, batch_size=a.adjustor_batch).cpu()
        guide_in, _ = paste_crops(render["rgb_in"], crops_in, crops["windows_in"], mask=masks["mask_in"])
        out = {"crops_in": crops_in, "guide_in": guide_in}
        if views.cameras_out is not None and "crops_out" in crops:
            mapper = hidden_mapper_for(ctx, gen_path, gen)
            from nerfeditor_ns.gan.hidden_mapper import stylize_out_of_domain

            outs = []
            with torch.no_grad():
                for start in range(0, crops["crops_out"].shape[0], a.adjustor_batch):
                    part = crops["crops_out"][start : start + a.adjustor_batch].to(ctx.device)
                    outs.append(stylize_out_of_domain(gen, mapper, part, w_style[None].to(ctx.device)).cpu())
            crops_out = torch.cat(outs)
            guide_out, _ = paste_crops(render["rgb_out"], crops_out, crops["windows_out"], mask=masks["mask_out"])
            out.update({"crops_out": crops_out, "guide_out": guide_out})
        return out

    def compute():
        if mode == "style_image":
            return compute_style()
        views = ctx.views()
        tuned = finetuned_generator(ctx)
        poses = _poses(views.theta_in, views.phi_in)
        edited, unedited = in_domain_crops(tuned, load_adjustor(ctx), w_frontal, w_style, poses, a.adjustor_batch)
        g_in = guides_from_crops(render["rgb_in"], edited, unedited, crops["windows_in"], masks["mask_in"])
        out = {"crops_in": edited, "crops_in_unedited": unedited, "guide_in": g_in["guide"]}
        if views.cameras_out is not None and "crops_out" in crops:
            mapper = hidden_mapper_for(ctx, gen_path, ctx.generator())  # trained for (and checked against) G
            edited, unedited = out_of_domain_crops(tuned, mapper, crops["crops_out"], w_frontal, w_style,
                                                   a.adjustor_batch)
            g_out = guides_from_crops(render["rgb_out"], edited, unedited, crops["windows_out"], masks["mask_out"])
            out.update({"crops_out": edited, "crops_out_unedited": unedited, "guide_out": g_out["guide"]})
        return out

    return ctx.step("guides", inputs, compute)


def write_guide_sets(ctx: EditContext, directory: Path) -> List[str]:
    """Save the guide sets (images + masks + cameras) where the new run's data manager loads them."""
    from nerfeditor_ns.nerf.guide_sets import GuideSet, save_guide_sets

    views, guides, masks = ctx.views(), ctx.results["guides"], ctx.results["masks"]
    sets = [GuideSet(name="in_domain", images=guides["guide_in"], cameras=views.cameras_in, alpha=1.0,
                     masks=masks["mask_in"])]
    if "guide_out" in guides:
        sets.append(GuideSet(name="out_of_domain", images=guides["guide_out"], cameras=views.cameras_out, alpha=1.0,
                             masks=masks["mask_out"]))
    save_guide_sets(directory, sets)
    return [gs.name for gs in sets]


def step_finetune(ctx: EditContext) -> Dict[str, Any]:
    """Step 6: finetune a copy of the NeRF on the guide sets with nerfstudio's Trainer (Eqs. 2-6)."""
    from nerfeditor_ns.edit import finetune as ft

    a = ctx.args
    work = ctx.run.work
    guides_dir = work / GUIDES_DIRNAME

    def compute():
        original, _ = ctx.original()
        names = write_guide_sets(ctx, guides_dir)
        cfg = ft.build_finetune_config(original, work, guides_dir, a.finetune_steps, vis=a.vis,
                                       device_type=None if a.device == "auto" else a.device)
        ft.save_config(cfg, work / "config.yml")
        ctx.console.print(f"finetuning {cfg.max_num_iterations} steps on guide sets {names} -> {work}")
        ckpt = ft.run_finetune(cfg, lr_scale=a.finetune_lr_scale)
        return {"checkpoint": str(ckpt.relative_to(work)) if work in ckpt.parents else str(ckpt),
                "steps": int(cfg.max_num_iterations), "guide_sets": names,
                "original_steps": int(original.max_num_iterations)}

    steps = a.finetune_steps if a.finetune_steps is not None else "default"
    return ctx.step("finetune", dict(steps=steps, vis=a.vis, lr_scale=a.finetune_lr_scale), compute)


def load_edited_run(ctx: EditContext):
    """The finetuned pipeline from the partial run directory, loaded like any nerfstudio run (placed at the work
    directory whatever its config.yml says, so a resume after the final config was written still finds it)."""
    import contextlib
    import io

    from nerfstudio.utils.eval_utils import eval_setup

    from nerfeditor_ns.edit.finetune import nerfstudio_checkpoint_globals, place_run

    work = ctx.run.work

    def at_work(cfg):
        place_run(cfg, work)
        cfg.pipeline.datamanager.guide_sets_dir = work / GUIDES_DIRNAME
        return cfg

    with contextlib.redirect_stdout(io.StringIO()), nerfstudio_checkpoint_globals():
        _, pipeline, _, _ = eval_setup(work / "config.yml", eval_num_rays_per_chunk=ctx.args.render_chunk,
                                       test_mode="test", update_config_callback=at_work)
    return pipeline


def step_outputs(ctx: EditContext) -> Dict[str, Any]:
    """Step 8: before/after renders: grid PNG (original | guide | edited), turntable video, metrics.json."""
    import torch

    from nerfeditor_ns.edit.outputs import save_grid, save_turntable, turntable_cameras, write_json_atomic
    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.eval.metrics import edit_metrics

    a = ctx.args
    render, guides, masks, crops = (ctx.results[k] for k in ("render", "guides", "masks", "crops"))
    work = ctx.run.work

    def compute():
        views = ctx.views()
        _, original = ctx.original()
        edited = load_edited_run(ctx)
        after_in = render_views(edited, views.cameras_in, alpha=1.0, chunk=a.render_chunk, description="Edited V_in")
        out: Dict[str, Any] = {"after_in": after_in["rgb"]}
        before = [render["rgb_in"]]
        after = [after_in["rgb"]]
        guide_cols = [guides["guide_in"]]
        fg = [masks["mask_in"]]
        if views.cameras_out is not None:
            after_out = render_views(edited, views.cameras_out, alpha=1.0, chunk=a.render_chunk,
                                     description="Edited V_out")
            out["after_out"] = after_out["rgb"]
            before.append(render["rgb_out"])
            after.append(after_out["rgb"])
            guide_cols.append(guides.get("guide_out", render["rgb_out"]))
            fg.append(masks["mask_out"])
        before_all, after_all, guide_all = torch.cat(before), torch.cat(after), torch.cat(guide_cols)
        rows = _grid_rows(before_all.shape[0], 8)
        save_grid([("original", list(before_all[rows])), ("guide", list(guide_all[rows])),
                   ("edited", list(after_all[rows]))], work / "before_after.png")

        # turntable: original (alpha 0) | edited (alpha 1), side by side
        cams = turntable_cameras(views.cameras_in[0:1], _frontal_geometry(views.geometry), a.video_frames, mode="arc")
        tt_before = render_views(original, cams, alpha=0.0, chunk=a.render_chunk, description="Turntable (original)")
        tt_after = render_views(edited, cams, alpha=1.0, chunk=a.render_chunk, description="Turntable (edited)")
        frames = torch.cat([tt_before["rgb"], tt_after["rgb"]], dim=2)
        video = save_turntable(list(frames), work / "turntable.mp4", fps=max(1, min(24, a.video_frames // 2)))

        # reconstruction check at a few training cameras (alpha 0 must still be the original scene)
        train_cams = ctx.cameras()
        idx = torch.linspace(0, len(train_cams) - 1, min(3, len(train_cams))).round().long().unique()
        recon_cams = train_cams[idx]
        if a.render_scale != 1.0:
            recon_cams = _rescaled(recon_cams, a.render_scale)
        dataset = original.datamanager.train_dataset
        capture = torch.stack([dataset[int(i)]["image"][..., :3].float() for i in idx])
        recon_after = render_views(edited, recon_cams, alpha=0.0, chunk=a.render_chunk,
                                   description="Reconstruction (edited, alpha 0)")["rgb"]
        recon_before = render_views(original, recon_cams, alpha=0.0, chunk=a.render_chunk,
                                    description="Reconstruction (original)")["rgb"]
        if capture.shape[1:3] != recon_after.shape[1:3]:
            capture = torch.nn.functional.interpolate(
                capture.permute(0, 3, 1, 2), size=tuple(recon_after.shape[1:3]), mode="area"
            ).permute(0, 2, 3, 1)
        n_in = render["rgb_in"].shape[0]
        metrics = edit_metrics(
            recon_renders=recon_after, capture_images=capture, recon_renders_before=recon_before,
            original_renders=before_all, edited_renders=after_all, foreground_masks=torch.cat(fg),
            guides_in=guides["guide_in"], renders_in=after_all[:n_in], masks_in=masks["mask_in"],
            guides_out=guides.get("guide_out"), renders_out=after_all[n_in:] if "guide_out" in guides else None,
            masks_out=masks.get("mask_out") if "guide_out" in guides else None,
            frontal_crop_original=crops["crops_front"], frontal_crop_edited=_edited_frontal_crop(ctx, edited),
            arcface=_arcface_fn(ctx), clip_score=_clip_score_fn(ctx), prompt=a.prompt,
        )
        write_json_atomic(metrics, work / "metrics.json")
        out["video"] = video.name
        return out

    return ctx.step("outputs", dict(frames=a.video_frames), compute)


def _grid_rows(n: int, max_rows: int):
    import torch

    return torch.linspace(0, n - 1, min(n, max_rows)).round().long().unique()


def _edited_frontal_crop(ctx: EditContext, edited) -> "Any":
    from nerfeditor_ns.edit.crops import extract_crops
    from nerfeditor_ns.edit.render import render_views

    crops = ctx.results["crops"]
    front = render_views(edited, ctx.frontal_camera(), alpha=1.0, chunk=ctx.args.render_chunk, progress=False)
    return extract_crops(front["rgb"], crops["windows_front"], int(crops["resolution"]))


def _arcface_fn(ctx: EditContext):
    if ctx.networks.arcface is None:
        return None
    net = _identity(ctx).net
    return lambda x: net(x.to(next(net.parameters()).device)).cpu()


def _clip_score_fn(ctx: EditContext):
    if ctx.checked.mode != "prompt":
        return None
    from nerfeditor_ns.gan.edits import clip_image_embedding, clip_text_embedding

    clip = load_clip_model(ctx)

    def score(images, text):
        return (clip_image_embedding(clip, images.to(clip.device)) * clip_text_embedding(clip, text)).sum(-1).cpu()

    return score


def write_record(ctx: EditContext, timings: Dict[str, float]) -> None:
    """edit.json: the edit, the original run, the networks (with SHA-256), settings and timings."""
    import dataclasses

    from nerfeditor_ns.edit.networks import network_hashes

    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(ctx.args).items()}
    record = {
        "format": "nerfeditor-ns/edit",
        "version": 1,
        "edit": ctx.checked.spec,
        "original_run": str(Path(ctx.args.load_config).absolute()),
        "method_name": ctx.checked.method_name,
        "networks": network_hashes(ctx.networks),
        "network_sources": ctx.networks.sources,
        "notes": ctx.checked.notes,
        "settings": args,
        "finetune": {k: v for k, v in ctx.results["finetune"].items()},
        "generator_finetune": {k: v for k, v in ctx.results["gen_finetune"].items() if k != "codes"},
        "frontal_camera": int(ctx.results["render"]["frontal_index"]),
        "mask_source": ctx.results["masks"].get("source"),
        "timings_s": timings,
        "files": {"config": "config.yml", "guides": GUIDES_DIRNAME, "grid": "before_after.png",
                  "video": ctx.results["outputs"]["video"], "metrics": "metrics.json",
                  "frontal": "frontal.png", "frontal_edited": "frontal_edited.png"},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_text(ctx.run.work / EDIT_RECORD, json.dumps(record, indent=2, default=str))


def _device(choice: str):
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise EditError("--device cuda was given but CUDA is not available.", "use --device cpu or auto.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def run_edit(args: "EditArgs") -> Path:
    """Run a whole edit (validation, the cached steps, the atomic finish); returns the new run directory."""
    console = _console()
    checked = validate_inputs(args)
    for note in checked.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    import torch

    torch.manual_seed(args.seed)
    ctx = EditContext(args=args, checked=checked, device=_device(args.device), console=console)
    preflight(ctx)
    resuming = checked.run.prepare()
    console.print(
        f"{'Resuming' if resuming else 'Starting'} edit ({checked.mode}) of {args.load_config} -> {checked.run.final}"
        f" (working in {checked.run.partial})"
    )
    for fn in (step_render, step_crops, step_masks, step_invert, step_adjustor, step_gen_finetune, step_w_style,
               step_guides, step_finetune, step_outputs):
        fn(ctx)
    from nerfeditor_ns.edit import finetune as ft

    original, _ = ctx.original()
    cfg_path = checked.run.work / "config.yml"
    import yaml

    cfg = yaml.load(cfg_path.read_text(), Loader=yaml.Loader)
    final_cfg = ft.finalize_config(cfg, original, checked.run.final, checked.run.final / GUIDES_DIRNAME)
    ft.save_config(final_cfg, cfg_path)
    timings = {name: checked.run.seconds(name) for name in STEPS}
    write_record(ctx, timings)
    final = checked.run.finalize(keep_cache=args.keep_cache)
    console.print(f"[bold green]Edit finished:[/bold green] {final}\n  view it: ns-viewer --load-config {final / 'config.yml'}")
    return final


def run_train_mapper(args: "TrainMapperArgs") -> Path:
    """``ns-edit train-mapper``: train (or resume) the hidden mapper of a generator into the cache."""
    import shutil

    from nerfeditor_ns.gan import hidden_mapper as hm
    from nerfeditor_ns.gan.checkpoints import load_generator

    console = _console()
    if args.steps < 1 or args.batch < 1:
        raise EditError("--steps and --batch must be at least 1.", "pass positive numbers.")
    flags = {"generator": args.generator, "vgg": args.vgg, "cache_dir": args.cache_dir}
    networks = resolve_networks(flags, args.network_config)
    for note in check_networks_for_mode(networks, "train_mapper"):
        if not args.slim:
            console.print(f"[yellow]note:[/yellow] {note}")
    device = _device(args.device)
    G = load_network("generator", networks.generator, lambda p: load_generator(p, device=device))
    slim = args.slim or networks.vgg is None
    cfg = mapper_config(networks.vgg, args.steps, slim, seed=args.seed, batch=args.batch, resolution=args.resolution)
    cache = mapper_cache_dir(networks.cache_dir)
    path = hm.hidden_mapper_cache_path(networks.generator, cache, cfg)
    console.print(f"Training the hidden mapper for {networks.generator} -> {path}")
    with out_of_memory_hint("train-mapper", ["--batch", "--device cpu"]):
        hm.get_or_train_hidden_mapper(networks.generator, cfg, cache_dir=cache, generator=G, device=device)
    if args.output is not None:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.output)
    console.print(f"[bold green]Hidden mapper ready:[/bold green] {path}")
    return path
