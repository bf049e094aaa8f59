"""Steps 9 and 11 of an edit (paper Fig. 2, right): finetune a copy of the NeRF on the guide sets, then render the
before/after outputs and the edit metrics (the original scene's side of them comes from step 10, ``original_views``
in ``output_views.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from nerfeditor_ns.edit.context import GUIDES_DIRNAME, EditContext

if TYPE_CHECKING:  # pragma: no cover
    from nerfeditor_ns.nerf.edit_region import EditRegion


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
    """Step 9 — Sec. 3.4, Eqs. 2-6: finetune a copy of the NeRF on the guide sets with nerfstudio's Trainer."""
    from nerfeditor_ns.edit import finetune as ft

    a = ctx.args
    work = ctx.run.work
    guides_dir = work / GUIDES_DIRNAME

    chain = ctx.checked.chain

    def compute():
        from nerfeditor_ns.edit.chain import base_training_steps, lr_scale_of_last

        original, _ = ctx.original()
        names = write_guide_sets(ctx, guides_dir)
        # a chained edit loads the edited run, whose config counts only its own finetune's iterations and whose
        # learning rates already carry its --finetune-lr-scale: the defaults come from the run the chain started at
        trained = base_training_steps(chain) if chain else int(original.max_num_iterations)
        steps = a.finetune_steps
        if steps is None and chain and trained is not None:
            steps = max(1, trained // 4)
        lr_scale = a.finetune_lr_scale / lr_scale_of_last(chain) if chain else a.finetune_lr_scale
        cfg = ft.build_finetune_config(original, work, guides_dir, steps, vis=a.vis,
                                       device_type=None if a.device == "auto" else a.device,
                                       loss_weights=a.finetune_loss_weights(), freeze_original=a.freeze_original,
                                       edit_region=edit_region(ctx))
        if cfg.pipeline.model.freeze_original and cfg.pipeline.model.original_loss_mult == 0:
            ctx.console.print("[yellow]note:[/yellow] L_ori is exactly 0 anyway while the finetune freezes the "
                              "original (alpha = 0) branch; add --freeze-original False for the paper's setting.")
        ft.save_config(cfg, work / "config.yml")
        ctx.console.print(f"finetuning {cfg.max_num_iterations} steps on guide sets {names} -> {work}")
        ckpt = ft.run_finetune(cfg, lr_scale=lr_scale)
        return {"checkpoint": str(ckpt.relative_to(work)) if work in ckpt.parents else str(ckpt),
                "steps": int(cfg.max_num_iterations), "guide_sets": names,
                "original_steps": trained, "loss_weights": finetune_loss_weights(cfg),
                "freeze_original": bool(cfg.pipeline.model.freeze_original)}  # L_ori is 0 while it holds

    steps = a.finetune_steps if a.finetune_steps is not None else "default"
    inputs = dict(steps=steps, vis=a.vis, lr_scale=a.finetune_lr_scale, region=a.edit_region)
    if a.finetune_loss_weights():
        inputs["loss_weights"] = a.finetune_loss_weights()
    if a.freeze_original is not None:
        inputs["freeze_original"] = a.freeze_original
    return ctx.step("finetune", inputs, compute,
                    oom_flags=["--render-chunk", "--render-scale"])


def finetune_loss_weights(cfg) -> Dict[str, float]:
    """The loss multipliers of the finetune's model (Eqs. 2-6 and the background colour term), for edit.json."""
    model = cfg.pipeline.model
    names = ("style_loss_mult", "background_loss_mult", "original_loss_mult", "background_color_loss_mult",
             "depth_loss_mult")
    return {name: float(getattr(model, name)) for name in names if hasattr(model, name)}


EDIT_REGION_FALLOFF = 0.1
"""Shell (fraction of the box's half-size) over which an edit fades out at the edit region's border."""


def edit_region(ctx: EditContext) -> Optional["EditRegion"]:
    """The NeRF's edit region for ``--edit-region box`` (None for "everywhere"): the crops step's subject box, cut
    below at the chin's level (the crops frame the head from ``FaceLayout.top`` to ``FaceLayout.bottom`` of the
    window, and the window spans the box's half-size either side of its centre), so a face edit never reaches the
    clothes (not cut for ``--face-alignment none``: a subject that is not a face); it fades out over
    :data:`EDIT_REGION_FALLOFF` of the half-size."""
    if ctx.args.edit_region != "box":
        return None
    from nerfeditor_ns.edit.crops import FaceLayout, SubjectBox
    from nerfeditor_ns.nerf.edit_region import EditRegion

    box = SubjectBox.from_dict(ctx.results["crops"]["box"])
    chin = 2.0 * FaceLayout().bottom - 1.0  # chin below the centre, in half-sizes
    if ctx.results["crops"].get("aligned_by") == "none":  # no face layout (any subject): the whole box
        chin = 1.0
    return EditRegion(centre=tuple(box.centre.tolist()), half_size=box.half_size,
                      rotation=tuple(box.rotation.reshape(-1).tolist()), falloff=EDIT_REGION_FALLOFF, bottom=chin)


def reference_face_colours(ctx: EditContext) -> Optional[Tuple[Any, Any]]:
    """(reference face colour, original subject's face colour) for a --reference-image edit, both over the aligned
    face box of an aligned crop (the reference; the original's frontal crop): the "towards the reference" figure."""
    if ctx.mode != "reference_image" or ctx.args.reference_image is None:
        return None
    from nerfeditor_ns.edit.steps_gan import read_image
    from nerfeditor_ns.eval.fidelity import reference_face_colour

    reference = (read_image(ctx.args.reference_image, 256)[0].permute(1, 2, 0) + 1) / 2
    frontal = (ctx.results["crops"]["crops_front"][0].permute(1, 2, 0) + 1) / 2
    return reference_face_colour(reference), reference_face_colour(frontal)


def step_outputs(ctx: EditContext) -> Dict[str, Any]:
    """Step 11 — Sec. 4 (evaluation): before/after grid PNG (original | guide | edited), turntable video and
    metrics.json in the nerfeditor-metrics schema (nerfeditor_ns/eval/schema.py; KID is left to ns-edit eval).

    Only the edited run is rendered here, each view once per alpha: the original scene's renders come from the
    render and original_views steps (``output_views.outputs_renderer``)."""
    import torch

    from nerfeditor_ns.edit.crops import extract_crops
    from nerfeditor_ns.edit.eval_nets import networks_of_edit
    from nerfeditor_ns.edit.output_views import output_cameras, outputs_renderer, recon_indices
    from nerfeditor_ns.edit.outputs import save_grid, save_turntable, write_json_atomic
    from nerfeditor_ns.eval.fidelity import edit_fidelity_metrics
    from nerfeditor_ns.eval.report import EvalInputs, ViewPair, fill_metrics
    from nerfeditor_ns.eval.schema import finish, new_report

    a = ctx.args
    render, guides, masks, crops = (ctx.results[k] for k in ("render", "guides", "masks", "crops"))
    work = ctx.run.work

    def compute():
        views = ctx.views()
        _, original = ctx.original()
        renderer = outputs_renderer(ctx, ctx.edited())
        cams = output_cameras(ctx)
        after_in = renderer.render("edited", views.cameras_in, 1.0, description="Edited V_in")
        out: Dict[str, Any] = {"after_in": after_in["rgb"]}
        before = [render["rgb_in"]]
        after = [after_in["rgb"]]
        guide_cols = [guides["guide_in"]]
        fg = [masks["mask_in"]]
        if views.cameras_out is not None:
            after_out = renderer.render("edited", views.cameras_out, 1.0, description="Edited V_out")
            out["after_out"] = after_out["rgb"]
            before.append(render["rgb_out"])
            after.append(after_out["rgb"])
            guide_cols.append(guides.get("guide_out", render["rgb_out"]))
            fg.append(masks["mask_out"])
        before_all, after_all, guide_all = torch.cat(before), torch.cat(after), torch.cat(guide_cols)
        rows = grid_rows(before_all.shape[0], 8)
        save_grid([("original", list(before_all[rows])), ("guide", list(guide_all[rows])),
                   ("edited", list(after_all[rows]))], work / "before_after.png")

        # turntable: original (alpha 0) | edited (alpha 1), side by side
        tt_before = renderer.render("original", cams["turntable"], 0.0, description="Turntable (original)")
        tt_after = renderer.render("edited", cams["turntable"], 1.0, description="Turntable (edited)")
        frames = torch.cat([tt_before["rgb"], tt_after["rgb"]], dim=2)
        video = save_turntable(list(frames), work / "turntable.mp4", fps=max(1, min(24, a.video_frames // 2)))

        # reconstruction check at a few training cameras (alpha 0 must still be the original scene)
        dataset = original.datamanager.train_dataset
        idx = recon_indices(len(ctx.cameras()))
        capture = torch.stack([dataset[int(i)]["image"][..., :3].float() for i in idx])
        recon_after = renderer.render("edited", cams["recon"], 0.0, description="Reconstruction (edited, alpha 0)")["rgb"]
        recon_before = renderer.render("original", cams["recon"], 0.0, description="Reconstruction (original)")["rgb"]
        # edit fidelity (eval/fidelity.py): edited alpha 1 vs the ORIGINAL run at ALL training cameras, on regions fixed
        # independently of the edit's masks, at <= METRICS_MAX_SIDE px (a regular pixel sample of every view: cheap)
        fid_original = renderer.render("original", cams["fidelity"], 0.0,
                                       description="Fidelity (original, training views)")["rgb"]
        fid_edited = renderer.render("edited", cams["fidelity"], 1.0,
                                     description="Fidelity (edited, training views)")["rgb"]
        if capture.shape[1:3] != recon_after.shape[1:3]:
            capture = torch.nn.functional.interpolate(
                capture.permute(0, 3, 1, 2), size=tuple(recon_after.shape[1:3]), mode="area"
            ).permute(0, 2, 3, 1)
        n_in = render["rgb_in"].shape[0]
        has_out = views.cameras_out is not None
        complete = not has_out or "guide_out" in guides  # guide images for every guide view
        n_views = before_all.shape[0] if complete else n_in
        crops_in = extract_crops(after_in["rgb"], crops["windows_in"], int(crops["resolution"]))
        front_edited, front_crop = edited_frontal_view(ctx, renderer)
        guide_cams = [views.cameras_in] + ([views.cameras_out] if has_out else [])
        guide_c2w = torch.cat([c.camera_to_worlds.detach().cpu().reshape(-1, 3, 4) for c in guide_cams])[:n_views]
        inputs = EvalInputs(
            guide_views=ViewPair(before_all[:n_views], after_all[:n_views]), guides=guide_all[:n_views],
            masks=torch.cat(fg)[:n_views], num_in_domain=n_in,
            crops_frontal=ViewPair(crops["crops_front"], front_crop),
            crops_in_domain=ViewPair(crops["crops_in"], crops_in),
            path=ViewPair(tt_before["rgb"], tt_after["rgb"]),
            training_alpha0=recon_after, training_alpha0_before=recon_before, recon_capture=capture,
            prompt=a.prompt, target_caption=a.prompt, guide_c2w=guide_c2w,
            frontal_view=ViewPair(render["rgb_front"], front_edited),
            frontal_c2w=ctx.frontal_camera().camera_to_worlds.detach().cpu().reshape(3, 4),
        )
        metrics = new_report(
            "ns-edit outputs step", edited_run=str(ctx.run.final), original_run=str(Path(a.load_config).absolute()),
            edit=ctx.checked.spec,
            settings={"render_scale": a.render_scale, "guide_views": n_views, "in_domain_views": n_in,
                      "path": f"turntable arc, {a.video_frames} frames", "reconstruction_cameras": [int(i) for i in idx],
                      "source_caption": inputs.source_caption, "target_caption": inputs.target_caption},
        )
        fill_metrics(metrics, inputs, networks_of_edit(ctx))
        metrics["fidelity"] = edit_fidelity_metrics(fid_edited, fid_original, after_all[n_in:] if has_out else None,
                                                    before_all[n_in:] if has_out else None,
                                                    face_colours=reference_face_colours(ctx))
        metrics["domain_check"] = ctx.results.get("domain_check")  # how far the guides can be trusted
        finish(metrics)
        write_json_atomic(metrics, work / "metrics.json")
        out["video"] = video.name
        out["rendered_views"] = dict(renderer.rendered)
        return out

    return ctx.step("outputs", dict(frames=a.video_frames), compute, oom_flags=["--render-chunk", "--video-frames"])


def grid_rows(n: int, max_rows: int):
    """At most ``max_rows`` evenly spaced row indices of ``n`` views."""
    import torch

    return torch.linspace(0, n - 1, min(n, max_rows)).round().long().unique()


def edited_frontal_view(ctx: EditContext, renderer) -> Tuple[Any, Any]:
    """The edited run's frontal view (alpha 1, through the outputs' ``renderer``) and its crop, cropped like the
    original frontal crop."""
    from nerfeditor_ns.edit.crops import extract_crops

    crops = ctx.results["crops"]
    front = renderer.render("edited", ctx.frontal_camera(), 1.0, description="Edited frontal view")
    return front["rgb"], extract_crops(front["rgb"], crops["windows_front"], int(crops["resolution"]))
