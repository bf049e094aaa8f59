"""Input checks of ``ns-edit`` that need no torch (run before anything heavy, so bad input is refused in well under
a second): the edit, the run's ``config.yml`` (read as text, never constructed), images, the ``--direction`` spec,
numeric flags, network paths and the output directory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from nerfeditor_ns.edit.args import EditArgs
from nerfeditor_ns.edit.chain import earlier_edits
from nerfeditor_ns.edit.errors import EditError, NotANerfEditorRunError
from nerfeditor_ns.edit.networks import NetworkPaths, check_networks_for_mode, resolve_networks
from nerfeditor_ns.edit.run_dir import RunDir, step_key
from nerfeditor_ns.io_utils import file_sha256
from nerfeditor_ns.gan.direction_spec import DIRECTION_GRAMMAR, DirectionSpec, parse_direction_spec
from nerfeditor_ns.method_names import NERFEDITOR_METHODS

#: the fix printed with every refused --direction
DIRECTION_FIX = f"use --direction {DIRECTION_GRAMMAR} (e.g. pc:7:+3, pc:0:-2:0-4 or smile.pt:2.0)."


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


def check_direction(spec: str) -> DirectionSpec:
    """Parse ``--direction`` with the one grammar of :mod:`nerfeditor_ns.gan.direction_spec` (a direction file must
    exist); returns the parsed spec or raises :class:`EditError` naming the problem and the grammar."""
    try:
        parsed = parse_direction_spec(spec)
    except ValueError as err:
        raise EditError(f"--direction: {err}", DIRECTION_FIX) from None
    if parsed.kind == "file" and not Path(parsed.path).expanduser().is_file():
        raise EditError(f"--direction file {parsed.path} does not exist.", DIRECTION_FIX)
    return parsed


def edit_spec(args: EditArgs, mode: str) -> Dict[str, Any]:
    """What the edit is (recorded in edit.json and part of every cache key)."""
    value = getattr(args, mode)
    spec: Dict[str, Any] = {"mode": mode, "value": str(value)}
    if mode in ("reference_image", "edited_image", "style_image"):
        spec["sha256"] = file_sha256(value)
    if mode == "reference_image":
        spec["mix_layer"] = args.mix_layer
    if mode == "style_image":
        spec.update(style_level=args.style_level, style_strength=float(args.style_strength),
                    style_guides=args.style_guides)
    return spec


def check_style_flags(args: EditArgs) -> None:
    """--style-strength in [0, 1]; --style-level a power of two >= 4 (whether the hidden mapper has that block is
    checked once it is loaded)."""
    s = float(args.style_strength)
    if not math.isfinite(s) or not 0.0 <= s <= 1.0:
        raise EditError(f"--style-strength must be between 0 and 1 (got {args.style_strength}).",
                        "pass 0 (the subject's own code) ... 1 (the painting's style codes).")
    level = args.style_level
    if level is not None and (level < 4 or level & (level - 1)):
        raise EditError(f"--style-level {level} is not a hidden-map resolution (a power of two >= 4).",
                        "pass one of the hidden mapper's resolutions (e.g. 32, 64 or 128 for a 1024 generator), or "
                        "leave it out for the mapper's lowest.")


def default_output_dir(config_path: Path, mode: str, spec: Dict[str, Any],
                       variant: Optional[Dict[str, Any]] = None) -> Path:
    """``<run>-edit-<kind>-<hash>`` beside the original run (deterministic, so re-running resumes). ``variant``
    (the ablations and loss weights of :func:`edit_variant`) is hashed too, so an ablation of an edit gets its own
    directory."""
    run = Path(config_path).absolute().parent
    key = step_key(spec) if not variant else step_key(spec, variant)
    return run.parent / f"{run.name}-edit-{mode.replace('_', '-')}-{key[:8]}"


def output_dir_of(args: EditArgs, mode: str, spec: Dict[str, Any]) -> Path:
    """The new run's directory: ``--output-dir``, or the default name beside the original run (absolute)."""
    out = args.output_dir if args.output_dir is not None else default_output_dir(args.load_config, mode, spec,
                                                                                   edit_variant(args))
    return Path(out).absolute()


def edit_variant(args: EditArgs) -> Dict[str, Any]:
    """The paper's ablations and the finetune settings this edit overrides (empty for a plain edit)."""
    variant: Dict[str, Any] = {}
    if args.ablations():
        variant["ablations"] = args.ablations()
    if args.finetune_loss_weights():
        variant["loss_weights"] = args.finetune_loss_weights()
    if args.freeze_original is not None:
        variant["freeze_original"] = args.freeze_original
    return variant


@dataclass
class ValidatedEdit:
    """Everything :func:`validate_inputs` established before the heavy work starts."""

    mode: str
    spec: Dict[str, Any]
    method_name: str
    networks: NetworkPaths
    notes: List[str]
    run: RunDir
    direction: Optional[DirectionSpec] = None
    """The parsed ``--direction`` (None for the other edits)."""
    chain: List[Dict[str, Any]] = field(default_factory=list)
    """The edits already in the run being edited, oldest first (:mod:`nerfeditor_ns.edit.chain`): empty for a run
    trained with ns-train; otherwise this is a chained edit, whose original is the last one's alpha = 1 scene."""


def validate_inputs(args: EditArgs) -> ValidatedEdit:
    """All checks that need no torch: the edit, the run config, images, networks, the output directory."""
    mode = args.edit_mode()
    if mode == "prompt" and not str(args.prompt).strip():
        raise EditError("--prompt is empty.", 'describe the edit, e.g. --prompt "tanned skin".')
    header = read_run_header(args.load_config)
    chain = earlier_edits(args.load_config)
    for flag, value in (("--reference-image", args.reference_image), ("--edited-image", args.edited_image),
                        ("--style-image", args.style_image)):
        if value is not None:
            check_image(value, flag)
    direction = check_direction(args.direction) if args.direction is not None else None
    check_style_flags(args)
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
    for name, value in args.finetune_loss_weights().items():
        if not math.isfinite(value) or value < 0:
            raise EditError(f"--{name.replace('_', '-')} must be a finite number >= 0 (got {value}).",
                            "pass 0 to drop the loss term, or leave the flag out for the run's own weight.")
    if args.mask_dir is not None and not Path(args.mask_dir).is_dir():
        raise EditError(f"--mask-dir {args.mask_dir} is not a directory.",
                        "pass the folder holding one foreground mask per training image, named like the images.")
    from nerfeditor_ns.edit.capture_checks import check_frontal_index_early

    check_frontal_index_early(args.frontal_camera, args.load_config)
    if args.max_inversion_error_ratio is not None and not args.max_inversion_error_ratio > 0:
        raise EditError("--max-inversion-error-ratio must be positive.", "leave it out for the calibrated default.")
    flags = {name: getattr(args, name) for name in ("generator", "encoder", "arcface", "clip", "vgg",
                                                   "style_generator", "hidden_mapper", "clip_model", "cache_dir")}
    networks = resolve_networks(flags, args.network_config)
    notes = check_networks_for_mode(networks, mode)
    spec = edit_spec(args, mode)
    out = output_dir_of(args, mode, spec)
    original_dir = Path(args.load_config).absolute().parent
    if out == original_dir or original_dir in out.parents:
        raise EditError(f"--output-dir {out} is inside the original run.", "choose a directory outside it.")
    run = RunDir(out, overwrite=args.overwrite)
    run.check_output_free()
    return ValidatedEdit(mode, spec, header["method_name"], networks, notes, run, direction, chain)
