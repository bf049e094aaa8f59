"""A whole edit (paper Sec. 3, Fig. 2): check the input, load and check the networks, run the steps in order, write
the final config and ``edit.json``, and rename ``<out>.partial`` to ``<out>``; ``ns-edit train-mapper``; and
``ns-edit cache list|clean``.

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
=======
Every step is cached and skipped when its result exists with the same inputs: the edit-independent ones (scene steps,
marked S) in the scene cache beside the original run (``<run>.nerfeditor-cache/``, reused by every edit of the run;
:mod:`nerfeditor_ns.edit.scene_cache`), the others in ``<out>.partial/cache`` (resuming an interrupted edit).

=====  ==============  ====================================================================  ==================  ==
 k     step            what                                                                  module              S
=====  ==============  ====================================================================  ==================  ==
 1     render          frontal view, V_in, V_out of the original scene (alpha 0)             steps_scene         S
 2     crops           one 3D subject box -> aligned square crops at the GAN resolution      steps_scene         S
 3     masks           foreground masks (the guides are pasted back through them)            steps_scene         S
 4     invert          frontal crop -> W+ code (Sec. 3.2)                                    steps_gan           S
 5     adjustor        latent code adjustor on the in-domain pairs (Eq. 1, Eqs. 7-9)         steps_gan           S
 6     gen_finetune    the generator finetuned on the in-domain pairs (Sec. 4, Tab. 5)       steps_gan           S
 7     w_style         the edited frontal code                                               steps_gan
 8     guides          I_in through the adjustor, I_out through the hidden mapper (Sec. 3.3) steps_guides
 9     finetune        the NeRF finetuned on the guide sets (Sec. 3.4, Eqs. 2-6)             steps_nerf
 10    original_views  the original scene at the outputs' cameras (turntable, checks)        output_views        S
 11    outputs         before/after grid, turntable, metrics.json (edited views only)        steps_nerf
=====  ==============  ====================================================================  ==================  ==
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from nerfeditor_ns.edit.args import EditArgs, TrainMapperArgs
from nerfeditor_ns.edit.cache_args import CacheCleanArgs, CacheListArgs
from nerfeditor_ns.edit.checks import validate_inputs
from nerfeditor_ns.edit.context import GUIDES_DIRNAME, EditContext, choose_device, console, load_network
from nerfeditor_ns.edit.domain_steps import check_after_step, check_capture
from nerfeditor_ns.edit.steps_guides import in_domain_change
from nerfeditor_ns.edit.errors import EditError, out_of_memory_hint
from nerfeditor_ns.edit.networks import check_networks_for_mode, network_hashes, resolve_networks
from nerfeditor_ns.edit.output_views import step_original_views
from nerfeditor_ns.edit.run_dir import EDIT_RECORD
from nerfeditor_ns.edit.scene_cache import SceneCache
from nerfeditor_ns.edit.steps_gan import check_component, step_adjustor, step_gen_finetune, step_invert, step_w_style
from nerfeditor_ns.edit.steps_guides import step_guides
from nerfeditor_ns.edit.steps_nerf import step_finetune, step_outputs
from nerfeditor_ns.edit.steps_scene import mask_source, step_crops, step_masks, step_render
from nerfeditor_ns.edit.steps_style import style_record
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
    ("original_views", step_original_views),
    ("outputs", step_outputs),
)
STEP_NAMES = tuple(name for name, _ in STEPS)


def preflight(ctx: EditContext) -> None:
    """Load and check every given network and the edit's parameters BEFORE any work or any file is written, so
    that a wrong file or value is refused with nothing half-written."""
    from nerfeditor_ns.gan import edits

    a, mode = ctx.args, ctx.mode
    G = ctx.generator()
    if mode != "style_image":  # --style-image uses neither (the art generator is inverted by projection)
        ctx.encoder()
        ctx.identity()
    ctx.perceptual()
    if mode == "prompt":
        ctx.clip()
    mapper = ctx.explicit_hidden_mapper(ctx.edit_generator()[1])
    if mode == "style_image":
        check_style_level(ctx, G, mapper)
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


def check_style_level(ctx: EditContext, G, mapper) -> None:
    """--style-level must be a block of the art generator (and of --hidden-mapper when given), before any work."""
    from nerfeditor_ns.edit.steps_style import style_level

    level = ctx.args.style_level
    if mapper is not None:
        style_level(ctx, mapper)
    elif level is not None and level not in G.feature_resolutions:
        raise EditError(f"--style-level {level} is not a block of the {G.resolution}px art generator.",
                        f"pass one of {list(G.feature_resolutions)} (the hidden mapper trains "
                        f"{', '.join(str(r) for r in default_mapper_levels(G))} by default).")


def default_mapper_levels(G) -> List[int]:
    """The hidden-map resolutions a mapper trained by ns-edit has for ``G`` (App. C's, scaled)."""
    from nerfeditor_ns.gan.hidden_mapper import default_resolutions

    return list(default_resolutions(int(G.resolution), list(G.feature_resolutions)))


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
    """edit.json: the edit, the original run (the run edited: for a chained edit, the earlier edit's run, whose alpha
    = 1 scene this edit started from), the earlier edits (``chain``, oldest first; empty unless chained), the networks
    (with SHA-256), settings and timings."""
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(ctx.args).items()}
    steps = ctx.run.steps  # this invocation's figures: where each step's result came from, its wall and CPU time
    record = {
        "format": "nerfeditor-ns/edit",
        "version": 1,
        "edit": ctx.checked.spec,
        "original_run": str(Path(ctx.args.load_config).absolute()),
        "chain": list(ctx.checked.chain),
        "method_name": ctx.checked.method_name,
        "networks": network_hashes(ctx.networks),
        "network_sources": ctx.networks.sources,
        "notes": ctx.checked.notes,
        "settings": args,
        "finetune": dict(ctx.results["finetune"]),
        "generator_finetune": {k: v for k, v in ctx.results["gen_finetune"].items() if k != "codes"},
        "frontal_camera": int(ctx.results["render"]["frontal_index"]),
        "face_alignment": ctx.results.get("crops", {}).get("aligned_by"),
        "ablations": ctx.args.ablations(),
        "adjustor": {k: v for k, v in ctx.results["adjustor"].items() if k != "state"},
        "guide_change": {"in_domain": in_domain_change(ctx), "out_of_domain": ctx.args.out_of_domain_change,
                         "colour_map_fit": ctx.results["guides"].get("colour_map_fit")},
        "style_transfer": style_record(ctx),
        "mask_source": ctx.results["masks"].get("source"),
        "edit_region": edit_region_record(ctx),
        "masks": {k: ctx.results["masks"].get(k) for k in ("mask_folder", "views_from_masks", "nerf_masks")},
        "domain_check": ctx.results.get("domain_check"),
        "timings_s": timings,
        "timings_wall_s": {name: steps[name].get("wall_s") for name in STEP_NAMES if name in steps},
        "timings_cpu_s": {name: steps[name].get("cpu_s") for name in STEP_NAMES if name in steps},
        "step_sources": {name: steps[name].get("source") for name in STEP_NAMES if name in steps},
        "scene_cache": None if ctx.scene_cache is None else str(ctx.scene_cache.root),
        "rendered_views": ctx.results["outputs"].get("rendered_views"),
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
    ctx = EditContext(args=args, checked=checked, plan=STEP_NAMES, device=choose_device(args.device), console=out,
                      scene_cache=open_scene_cache(args.load_config, out))
    preflight(ctx)
    check_capture(ctx)  # frontal camera index, yaw coverage (nothing written yet)
    mask_source(ctx)  # a mask folder that does not match the training images is refused (nothing written yet)
    resuming = checked.run.prepare()
    out.print(
        f"{'Resuming' if resuming else 'Starting'} edit ({checked.mode}) of {args.load_config} -> {checked.run.final}"
        f" (working in {checked.run.partial})"
    )
    if ctx.scene_cache is not None:
        out.print(f"scene cache (steps shared by every edit of this run): {ctx.scene_cache.root}")
    for name, step in STEPS:
        step(ctx)
        check_after_step(ctx, name)  # refusals between steps (domain check, nothing rendered in the subject box)
    write_final_config(ctx)
    write_record(ctx, {name: checked.run.seconds(name) for name in STEP_NAMES})
    final = checked.run.finalize(keep_cache=args.keep_cache)
    out.print(f"[bold green]Edit finished:[/bold green] {final}\n  view it: ns-viewer --load-config {final / 'config.yml'}")
    return final


def open_scene_cache(config_path: Path, out) -> "SceneCache | None":
    """The scene cache beside the run, or None (with a note) when the folder holding the run is not writable or a
    folder of that name exists that is not a scene cache."""
    cache = SceneCache.for_run(config_path)
    if cache.root.exists() and not cache.is_cache():
        why = f"{cache.root} exists but is not an ns-edit scene cache (no CACHEDIR.TAG), so it is left alone"
    elif not cache.writable():
        why = f"{cache.root.parent} is not writable"
    else:
        return cache
    out.print(f"[yellow]note:[/yellow] {why}: the steps shared by every edit of this run are cached only in this edit "
              "(a later edit of the run computes them again).")
    return None


def run_cache_command(args: "CacheListArgs | CacheCleanArgs") -> Dict[str, Any]:
    """``ns-edit cache list|clean``: show or remove a run's scene cache (entries and disk use; printed to stdout). The
    run itself is only read."""
    from rich.console import Console

    from nerfeditor_ns.edit.checks import read_run_header
    from nerfeditor_ns.edit.scene_cache import human_size
    from nerfeditor_ns.edit.scene_steps import SCENE_STEPS

    out = Console(highlight=False, soft_wrap=True)
    read_run_header(args.load_config)
    cache = SceneCache.for_run(args.load_config)
    steps = list(getattr(args, "step", None) or []) or None
    unknown = sorted(set(steps or []) - set(SCENE_STEPS))
    if unknown:
        raise EditError(f"--step {', '.join(unknown)}: not a cached step.", f"use one of {', '.join(SCENE_STEPS)}.")
    if cache.root.exists() and not cache.is_cache():
        raise EditError(f"{cache.root} exists but is not an ns-edit scene cache (it has no {cache.root.name}/CACHEDIR.TAG).",
                        "move or remove that folder yourself; ns-edit leaves it alone.")
    entries = cache.entries(steps)
    if isinstance(args, CacheListArgs):
        if not cache.root.exists():
            out.print(f"No scene cache for {Path(args.load_config).absolute().parent} (it would be {cache.root}).")
            return {"entries": 0, "bytes": 0}
        out.print(f"Scene cache of {Path(args.load_config).absolute().parent}: {cache.root}")
        out.print(f"{'step':<15} {'key':<12} {'size':>9} {'took s':>7}  {'computed':<19}  {'last used':<19}",
                  markup=False)
        for e in entries:
            out.print(f"{e.step:<15} {e.key[:12]:<12} {human_size(sum(_sizes(e))):>9} "
                      f"{float(e.meta.get('seconds') or 0):>7.1f}  {_when(e.meta.get('created')):<19}  "
                      f"{_when(e.path.stat().st_mtime):<19}", markup=False)
        pending = cache.pending()
        total = cache.disk_use()
        out.print(f"{len(entries)} entries, {human_size(total)} on disk"
                  + (f" ({len(pending)} being written)" if pending else ""))
        return {"entries": len(entries), "bytes": total}
    if not cache.root.exists():
        out.print(f"Nothing to clean: no scene cache at {cache.root}.")
        return {"entries": 0, "bytes": 0}
    report = cache.clean(steps)
    out.print(f"Removed {report['entries']} entries ({human_size(report['bytes'])}) from {cache.root}"
              + (" and the folder itself" if report["removed_folder"] else "")
              + (f"; left {report['kept_pending']} entries that a running edit is writing" if report["kept_pending"]
                 else "") + ". The run itself was not touched.")
    return report


def _sizes(entry) -> List[int]:
    return [p.stat().st_size for p in entry.path.rglob("*") if p.is_file()]


def _when(timestamp: Any) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))


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
