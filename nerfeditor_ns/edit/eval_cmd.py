"""``ns-edit eval``: the metrics of a finished edit (paper Sec. 4, Tabs. 2, 3, 5) written to ``eval.json``.

1. check the input (the edited run, its edit.json, the original run it names, the network files) before any work;
2. load the metric networks (a bad file is refused naming its flag), then both runs;
3. render, with the original run at alpha 0 and the edited run at alpha 1:
   the guide views (the cameras of the edited run's guide sets, at the guide images' size), the frontal view, the
   camera path (the turntable arc), and the training cameras (plus the edited run at alpha 0 there);
4. rebuild the edit's face crops (one 3D subject box from the original frontal render, as the edit's crops step,
   projected into the frontal and the in-domain views);
5. fill the nerfeditor-metrics/2 report (:mod:`nerfeditor_ns.eval.report`), write it atomically and print a table.

The runs are only read; the report is the only file written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from nerfeditor_ns.edit.errors import EditError
from nerfeditor_ns.edit.eval_args import DEFAULT_SOURCE_CAPTION, EvalArgs

REPORT_NAME = "eval.json"
EVAL_NETWORKS = ("vgg", "arcface", "clip", "inception")
"""The network files ns-edit eval uses (the others of ns-edit's network config are ignored)."""
ID_CROP_RESOLUTION = 256
"""Side (pixels) of the face crops fed to the ID score (ArcFace sees their inner region at 112 px)."""


def _read_edit_record(config: Path) -> Dict[str, Any]:
    from nerfeditor_ns.edit.checks import read_run_header
    from nerfeditor_ns.edit.run_dir import EDIT_RECORD

    read_run_header(config)
    record_path = Path(config).parent / EDIT_RECORD
    if not record_path.is_file():
        raise EditError(f"{config} is not an edited run: {record_path} does not exist.",
                        "pass the config.yml of a run written by ns-edit (a finished edit, not <out>.partial).")
    try:
        record = json.loads(record_path.read_text())
        original = Path(record["original_run"])
        settings = dict(record["settings"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise EditError(f"{record_path} cannot be read as an ns-edit record ({err}).",
                        "pass a run written by ns-edit; its edit.json must be intact.") from None
    if not original.is_file():
        raise EditError(f"The original run {original} named in {record_path} does not exist.",
                        "restore the original run (ns-edit eval renders it at alpha 0).")
    record["settings"] = settings
    return record


def check_eval_args(args: EvalArgs):
    """All checks that need no torch; returns (edit record, resolved networks, output path)."""
    from nerfeditor_ns.edit.networks import NETWORK_SOURCES, check_network_files, resolve_networks

    for name, value, least in (("--path-frames", args.path_frames, 1), ("--render-chunk", args.render_chunk, 1),
                               ("--max-training-views", args.max_training_views, 2)):
        if value is not None and value < least:
            raise EditError(f"{name} must be at least {least}, got {value}.", f"pass a number >= {least}.")
    if args.render_scale is not None and not args.render_scale > 0:
        raise EditError("--render-scale must be positive.", "e.g. --render-scale 0.5 renders at half size.")
    if not args.source_caption.strip():
        raise EditError("--source-caption is empty.", f'describe the original scene, e.g. "{DEFAULT_SOURCE_CAPTION}".')
    record = _read_edit_record(args.load_config)
    flags = {"vgg": args.vgg, "arcface": args.arcface, "clip": args.clip, "clip_model": args.clip_model,
             "inception": args.inception}
    networks = resolve_networks(flags, args.network_config)
    for name in set(NETWORK_SOURCES) - set(EVAL_NETWORKS):
        setattr(networks, name, None)  # not used here (they may be set in the environment / config file for ns-edit)
        networks.sources.pop(name, None)
    check_network_files(networks)
    out = Path(args.output) if args.output is not None else Path(args.load_config).parent / REPORT_NAME
    original_dir = Path(record["original_run"]).absolute().parent
    if original_dir == out.absolute().parent or original_dir in out.absolute().parents:
        raise EditError(f"--output {out} is inside the original run, which ns-edit never writes to.",
                        "leave --output out (eval.json in the edited run) or choose another place.")
    return record, networks, out


def _subset(n: int, most: Optional[int]):
    import torch

    if most is None or most >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, most).round().long().unique()


def _resize_to(images, size):
    import torch.nn.functional as F

    if tuple(images.shape[1:3]) == tuple(size):
        return images
    return F.interpolate(images.permute(0, 3, 1, 2), size=tuple(size), mode="area").permute(0, 2, 3, 1)


def _load_guide_sets(edited_dir: Path) -> List[Any]:
    """The edited run's guide sets, in-domain first (their cameras, images and masks are the guide views)."""
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets

    try:
        sets, _ = load_guide_sets(edited_dir / "guides")
    except (OSError, ValueError) as err:
        raise EditError(f"The guide sets of {edited_dir} cannot be read ({err}).",
                        "evaluate a complete edited run (its guides/ folder is part of it).") from None
    by_name = {g.name: g for g in sets}
    if "in_domain" not in by_name:
        raise EditError(f"{edited_dir / 'guides'} has no in_domain guide set.", "evaluate a run written by ns-edit.")
    return [by_name["in_domain"]] + ([by_name["out_of_domain"]] if "out_of_domain" in by_name else [])


def _face_crops(views, front_cam, front: Dict[str, Any], in_cams, in_pair: Dict[str, Any], box_scale: float, out,
                alignment: str = "silhouette") -> Dict[str, Any]:
    """Face crops (original / edited) of the frontal and the in-domain views from one subject box fitted to the
    original frontal render, as the edit's crops step does (with its ``--face-alignment``); None where the box cannot
    be projected."""
    from nerfeditor_ns.edit.crops import SubjectBox, extract_crops, project_box
    from nerfeditor_ns.edit.face_alignment import frontal_box
    from nerfeditor_ns.edit.steps_scene import frontal_geometry
    from nerfeditor_ns.eval.report import ViewPair

    crops: Dict[str, Any] = {"front": None, "in": None}
    try:
        box, _, _ = frontal_box(frontal_geometry(views.geometry), front_cam, front["original"]["rgb"][0],
                                front["original"]["depth"][0], front["original"]["accumulation"][0], alignment)
        box = SubjectBox(box.centre, box.half_size * box_scale, box.rotation)
        for tag, cams, pair in (("front", front_cam, front), ("in", in_cams, in_pair)):
            windows = project_box(box, cams)
            crops[tag] = ViewPair(extract_crops(pair["original"]["rgb"], windows, ID_CROP_RESOLUTION),
                                  extract_crops(pair["edited"]["rgb"], windows, ID_CROP_RESOLUTION))
    except ValueError as err:
        out.print(f"[yellow]note:[/yellow] no face crops ({err}); the ID score is off.")
    return crops


def run_eval(args: EvalArgs) -> Path:
    """Evaluate the edited run of ``args.load_config``; returns the path of the written report."""
    import torch

    from nerfeditor_ns.edit.context import choose_device, console, load_network, load_run, rescaled
    from nerfeditor_ns.edit.eval_nets import build_eval_networks
    from nerfeditor_ns.edit.outputs import turntable_cameras, write_json_atomic
    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.edit.steps_scene import frontal_geometry
    from nerfeditor_ns.edit.views import cameras_like, make_view_set
    from nerfeditor_ns.eval.fidelity import edit_fidelity_metrics
    from nerfeditor_ns.eval.report import EvalInputs, ViewPair, fill_metrics
    from nerfeditor_ns.eval.schema import finish, new_report

    out = console()
    record, networks, report_path = check_eval_args(args)
    s = record["settings"]
    nets = build_eval_networks(networks, choose_device(args.device),
                               lambda name, loader: load_network(name, getattr(networks, name), loader))
    for name, why in nets.missing.items():
        out.print(f"[yellow]note:[/yellow] {name} metrics off: {why}.")
    chunk = args.render_chunk
    original_config, edited_dir = Path(record["original_run"]), Path(args.load_config).absolute().parent
    _, original = load_run(original_config, chunk, chain_base=bool(record.get("chain")))  # chained: its alpha 1
    _, edited = load_run(Path(args.load_config), chunk)
    guide_sets = _load_guide_sets(edited_dir)

    def both(cams, what: str) -> Dict[str, Any]:
        return {"original": render_views(original, cams, alpha=0.0, chunk=chunk, description=f"{what} (original)"),
                "edited": render_views(edited, cams, alpha=1.0, chunk=chunk, description=f"{what} (edited)")}

    # the edit's views, rebuilt from its settings (the frontal view and the camera path need its capture geometry)
    scale = float(args.render_scale if args.render_scale is not None else s.get("render_scale", 1.0))
    train_cams = original.datamanager.train_dataset.cameras
    views = make_view_set(rescaled(train_cams, scale) if scale != 1.0 else train_cams,
                          frontal_index=record.get("frontal_camera", s.get("frontal_camera")),
                          in_domain_yaw=s["in_domain_yaw"], in_domain_pitch=s["in_domain_pitch"],
                          num_in_yaw=s["num_in_yaw"], num_in_pitch=s["num_in_pitch"], num_out=s["num_out_domain"])
    front_cam = cameras_like(views.cameras_in[0:1], views.geometry.orbit_c2w(torch.zeros(1), torch.zeros(1)))

    guide_pairs = [both(g.cameras, f"Guide views {g.name}") for g in guide_sets]  # the guide images' own size
    guide = {k: torch.cat([p[k]["rgb"] for p in guide_pairs]) for k in ("original", "edited")}
    n_in = int(guide_sets[0].images.shape[0])
    front = both(front_cam, "Frontal view")
    crops = _face_crops(views, front_cam, front, guide_sets[0].cameras, guide_pairs[0], float(s.get("box_scale", 1.0)),
                        out, record.get("face_alignment") or "silhouette")
    path = None
    if args.path_frames >= 2:
        path_cams = turntable_cameras(views.cameras_in[0:1], frontal_geometry(views.geometry), args.path_frames,
                                      mode="arc")
        path = both(path_cams, "Camera path")
    idx = _subset(len(train_cams), args.max_training_views)
    cams = rescaled(train_cams[idx], scale) if scale != 1.0 else train_cams[idx]
    train = both(cams, "Training views")
    train_alpha0 = render_views(edited, cams, alpha=0.0, chunk=chunk, description="Training views (edited, alpha 0)")
    dataset = original.datamanager.train_dataset
    capture = _resize_to(torch.stack([dataset[int(i)]["image"][..., :3].float() for i in idx]),
                         train["original"]["rgb"].shape[1:3])

    edit = record.get("edit") or {}
    prompt = edit.get("value") if edit.get("mode") == "prompt" else None
    inputs = EvalInputs(
        guide_views=ViewPair(guide["original"], guide["edited"]), guides=torch.cat([g.images for g in guide_sets]),
        masks=torch.cat([g.masks for g in guide_sets]) if all(g.masks is not None for g in guide_sets) else None,
        num_in_domain=n_in, crops_frontal=crops["front"], crops_in_domain=crops["in"],
        path=None if path is None else ViewPair(path["original"]["rgb"], path["edited"]["rgb"]),
        training=ViewPair(train["original"]["rgb"], train["edited"]["rgb"]), training_alpha0=train_alpha0["rgb"],
        training_alpha0_before=train["original"]["rgb"], recon_capture=capture, capture=capture, prompt=prompt,
        source_caption=args.source_caption, target_caption=args.target_caption or prompt,
        guide_c2w=torch.cat([g.cameras.camera_to_worlds.detach().cpu().reshape(-1, 3, 4) for g in guide_sets]),
        frontal_view=ViewPair(front["original"]["rgb"], front["edited"]["rgb"]),
        frontal_c2w=front_cam.camera_to_worlds.detach().cpu().reshape(3, 4),
    )
    report = new_report(
        "ns-edit eval", edited_run=str(edited_dir), original_run=str(original_config), edit=record.get("edit"),
        settings={"render_scale": scale, "guide_views": int(guide["original"].shape[0]), "in_domain_views": n_in,
                  "guide_size": list(guide["original"].shape[1:3]), "path": f"turntable arc, {args.path_frames} frames",
                  "training_cameras": idx.tolist(), "source_caption": args.source_caption,
                  "target_caption": inputs.target_caption, "id_crop_resolution": ID_CROP_RESOLUTION,
                  "networks": {k: v for k, v in networks.describe().items() if k in EVAL_NETWORKS},
                  "clip_model": networks.clip_model if networks.clip is not None else None},
    )
    fill_metrics(report, inputs, nets)
    out_views = guide_pairs[1] if len(guide_pairs) > 1 else None  # the out-of-domain guide views
    report["fidelity"] = edit_fidelity_metrics(
        train["edited"]["rgb"], train["original"]["rgb"],
        out_views["edited"]["rgb"] if out_views else None, out_views["original"]["rgb"] if out_views else None)
    report["domain_check"] = record.get("domain_check")
    finish(report)
    write_json_atomic(report, report_path)
    print_table(report, out)
    out.print(f"[bold green]Wrote[/bold green] {report_path}")
    return report_path


def print_table(report: Dict[str, Any], out) -> None:
    """The metrics as a short table (off metrics listed with their notes below it)."""
    from rich.table import Table

    from nerfeditor_ns.eval.schema import table_rows

    table = Table(title=f"{report['producer']}: {report.get('edited_run', '')}", show_lines=False)
    for col in ("metric", "value", "better"):
        table.add_column(col)
    for row in table_rows(report):
        table.add_row(*row)
    out.print(table)
    notes: List[str] = report["notes"]
    for note in notes:
        out.print(f"  [dim]{note}[/dim]")
