"""A whole edit (paper Sec. 3, Fig. 2): check the input, load and check the networks, run the steps in order (each
cached in ``<out>.partial/cache`` and skipped when its result exists with the same inputs), write the final config
and ``edit.json``, and rename ``<out>.partial`` to ``<out>``; and ``ns-edit train-mapper``.

=====  ==========  ===========================================================================  =================
 k     step        what                                                                         module
=====  ==========  ===========================================================================  =================
 1     render      frontal view, V_in, V_out of the original scene (alpha 0)                    steps_scene
 2     crops       one 3D subject box -> aligned square crops at the GAN resolution             steps_scene
 3     masks       foreground masks: --mask-dir, the capture's, else the NeRF's                 steps_scene
 4     invert      frontal crop -> W+ code (Sec. 3.2)                                           steps_gan
 5     adjustor    latent code adjustor on the in-domain pairs (Eq. 1, Eqs. 7-9)                steps_gan
 6     w_style     the edited frontal code                                                      steps_gan
 7     guides      I_in through the adjustor, I_out through the hidden mapper (Sec. 3.3)        steps_gan
 8     finetune    the NeRF finetuned on the guide sets (Sec. 3.4, Eqs. 2-6)                    steps_nerf
 9     outputs     before/after grid, turntable, metrics.json                                   steps_nerf
=====  ==========  ===========================================================================  =================
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

from nerfeditor_ns.edit.args import EditArgs, TrainMapperArgs
from nerfeditor_ns.edit.checks import validate_inputs
from nerfeditor_ns.edit.context import GUIDES_DIRNAME, EditContext, choose_device, console, load_network
from nerfeditor_ns.edit.domain_steps import check_after_step, check_capture
from nerfeditor_ns.edit.errors import EditError, out_of_memory_hint
from nerfeditor_ns.edit.networks import check_networks_for_mode, network_hashes, resolve_networks
from nerfeditor_ns.edit.run_dir import EDIT_RECORD
from nerfeditor_ns.edit.steps_gan import check_component, step_adjustor, step_gen_finetune, step_invert, step_w_style
from nerfeditor_ns.edit.steps_guides import step_guides
from nerfeditor_ns.edit.steps_nerf import step_finetune, step_outputs
from nerfeditor_ns.edit.steps_scene import mask_source, step_crops, step_masks, step_render
from nerfeditor_ns.io_utils import atomic_write_text

#: the steps in the order they run (their number k is the position here: the printed "[k/N]")
STEPS: Tuple[Tuple[str, Callable[[EditContext], Dict[str, Any]]], ...] = (
    ("render", step_render),
    ("crops", step_crops),
    ("masks", step_masks),
    ("invert", step_invert),
    ("adjustor", step_adjustor),
    ("gen_finetune", step_gen_finetune),
    ("w_style", step_w_style),
    ("guides", step_guides),
    ("finetune", step_finetune),
    ("outputs", step_outputs),
)
STEP_NAMES = tuple(name for name, _ in STEPS)


def preflight(ctx: EditContext) -> None:
    """Load and check every given network and the edit's parameters BEFORE any work or any file is written, so
    that a wrong file or value is refused with nothing half-written."""
    from nerfeditor_ns.gan import edits

    a, mode = ctx.args, ctx.mode
    G = ctx.generator()
    ctx.encoder()
    ctx.perceptual()
    ctx.identity()
    if mode == "prompt":
        ctx.clip()
    ctx.explicit_hidden_mapper(ctx.edit_generator()[1])
    if mode == "reference_image" and not 0 <= a.mix_layer <= G.num_ws:
        raise EditError(f"--mix-layer {a.mix_layer} is outside 0..{G.num_ws} (the generator has {G.num_ws} W+ rows).",
                        f"pick a layer between 0 and {G.num_ws}.")
    spec = ctx.checked.direction
    if spec is not None and spec.kind == "pc":
        check_component(spec.component, min(a.num_components, int(G.w_dim)))
    elif spec is not None:
        try:
            d = edits.load_direction(spec.path)
            edits.apply_direction(G.w_avg.detach().cpu().reshape(1, 1, -1).repeat(1, G.num_ws, 1), d, 1.0,
                                  spec.layers)
        except ValueError as err:
            raise EditError(f"--direction {a.direction}: {err}", "use a direction saved for this generator.") from None


def write_final_config(ctx: EditContext) -> None:
    """The finished run's config.yml: placed at its final directory, no longer pointing at the original run."""
    import yaml

    from nerfeditor_ns.edit import finetune as ft

    original, _ = ctx.original()
    cfg_path = ctx.run.work / "config.yml"
    cfg = yaml.load(cfg_path.read_text(), Loader=yaml.Loader)
    ft.save_config(ft.finalize_config(cfg, original, ctx.run.final, ctx.run.final / GUIDES_DIRNAME), cfg_path)


def edit_region_record(ctx: EditContext) -> Dict[str, Any]:
    """Where the edit may change the scene: the mode and, for "box", the region the NeRF's residual is gated by."""
    from nerfeditor_ns.edit.steps_nerf import edit_region

    region = edit_region(ctx) if "crops" in ctx.results else None
    return {"mode": ctx.args.edit_region, "region": None if region is None else dataclasses.asdict(region)}


def write_record(ctx: EditContext, timings: Dict[str, Any]) -> None:
    """edit.json: the edit, the original run, the networks (with SHA-256), settings and timings."""
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
        "finetune": dict(ctx.results["finetune"]),
        "generator_finetune": {k: v for k, v in ctx.results["gen_finetune"].items() if k != "codes"},
        "frontal_camera": int(ctx.results["render"]["frontal_index"]),
        "ablations": ctx.args.ablations(),
        "adjustor": {k: v for k, v in ctx.results["adjustor"].items() if k != "state"},
        "mask_source": ctx.results["masks"].get("source"),
        "edit_region": edit_region_record(ctx),
        "masks": {k: ctx.results["masks"].get(k) for k in ("mask_folder", "views_from_masks", "nerf_masks")},
        "domain_check": ctx.results.get("domain_check"),
        "timings_s": timings,
        "files": {"config": "config.yml", "guides": GUIDES_DIRNAME, "grid": "before_after.png",
                  "video": ctx.results["outputs"]["video"], "metrics": "metrics.json",
                  "frontal": "frontal.png", "frontal_edited": "frontal_edited.png"},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_text(ctx.run.work / EDIT_RECORD, json.dumps(record, indent=2, default=str))


def run_edit(args: EditArgs) -> Path:
    """Run a whole edit (validation, the cached steps, the atomic finish); returns the new run directory."""
    out = console()
    checked = validate_inputs(args)
    for note in checked.notes:
        out.print(f"[yellow]note:[/yellow] {note}")
    import torch

    torch.manual_seed(args.seed)
    ctx = EditContext(args=args, checked=checked, plan=STEP_NAMES, device=choose_device(args.device), console=out)
    preflight(ctx)
    check_capture(ctx)  # frontal camera index, yaw coverage (nothing written yet)
    mask_source(ctx)  # a mask folder that does not match the training images is refused (nothing written yet)
    resuming = checked.run.prepare()
    out.print(
        f"{'Resuming' if resuming else 'Starting'} edit ({checked.mode}) of {args.load_config} -> {checked.run.final}"
        f" (working in {checked.run.partial})"
    )
    for name, step in STEPS:
        step(ctx)
        check_after_step(ctx, name)  # refusals between steps (domain check, nothing rendered in the subject box)
    write_final_config(ctx)
    write_record(ctx, {name: checked.run.seconds(name) for name in STEP_NAMES})
    final = checked.run.finalize(keep_cache=args.keep_cache)
    out.print(f"[bold green]Edit finished:[/bold green] {final}\n  view it: ns-viewer --load-config {final / 'config.yml'}")
    return final


def run_train_mapper(args: TrainMapperArgs) -> Path:
    """``ns-edit train-mapper``: train (or resume) the hidden mapper of a generator into the cache."""
    import shutil

    from nerfeditor_ns.edit.mapper_cache import cached_mapper_path, mapper_cache_dir, mapper_config
    from nerfeditor_ns.gan.checkpoints import load_generator
    from nerfeditor_ns.gan.hidden_mapper_training import get_or_train_hidden_mapper

    out = console()
    if args.steps < 1 or args.batch < 1:
        raise EditError("--steps and --batch must be at least 1.", "pass positive numbers.")
    flags = {"generator": args.generator, "vgg": args.vgg, "cache_dir": args.cache_dir}
    networks = resolve_networks(flags, args.network_config)
    for note in check_networks_for_mode(networks, "train_mapper"):
        if not args.slim:
            out.print(f"[yellow]note:[/yellow] {note}")
    device = choose_device(args.device)
    G = load_network("generator", networks.generator, lambda p: load_generator(p, device=device))
    slim = args.slim or networks.vgg is None
    cfg = mapper_config(networks.vgg, args.steps, slim, seed=args.seed, batch=args.batch, resolution=args.resolution)
    path = cached_mapper_path(networks.generator, networks.cache_dir, cfg)
    out.print(f"Training the hidden mapper for {networks.generator} -> {path}")
    with out_of_memory_hint("train-mapper", ["--batch", "--device cpu"]):
        get_or_train_hidden_mapper(networks.generator, cfg, cache_dir=mapper_cache_dir(networks.cache_dir),
                                   generator=G, device=device)
    if args.output is not None:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.output)
    out.print(f"[bold green]Hidden mapper ready:[/bold green] {path}")
    return path
