"""Steps 9 and 11 of an edit (paper Fig. 2, right): finetune a copy of the NeRF on the guide sets, then render the
before/after outputs and the edit metrics (the original scene's side of them comes from step 10, ``original_views``
in ``output_views.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from nerfeditor_ns.edit.context import GUIDES_DIRNAME, EditContext


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
    return ctx.step("finetune", dict(steps=steps, vis=a.vis, lr_scale=a.finetune_lr_scale), compute,
                    oom_flags=["--render-chunk", "--render-scale"])


def step_outputs(ctx: EditContext) -> Dict[str, Any]:
    """Step 11 — Sec. 4 (evaluation): before/after grid PNG (original | guide | edited), turntable video and
    metrics.json (reconstruction at alpha 0, guide agreement, identity, CLIP score).

    Only the edited run is rendered here, each view once per alpha: the original scene's renders come from the
    render and original_views steps (``output_views.outputs_renderer``)."""
    import torch

    from nerfeditor_ns.edit.output_views import output_cameras, outputs_renderer, recon_indices
    from nerfeditor_ns.edit.outputs import save_grid, save_turntable, write_json_atomic
    from nerfeditor_ns.eval.fidelity import edit_fidelity_metrics
    from nerfeditor_ns.eval.metrics import edit_metrics

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
        capture = torch.stack([dataset[int(i)]["image"][..., :3].float() for i in recon_indices(len(ctx.cameras()))])
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
        metrics = edit_metrics(
            recon_renders=recon_after, capture_images=capture, recon_renders_before=recon_before,
            original_renders=before_all, edited_renders=after_all, foreground_masks=torch.cat(fg),
            guides_in=guides["guide_in"], renders_in=after_all[:n_in], masks_in=masks["mask_in"],
            guides_out=guides.get("guide_out"), renders_out=after_all[n_in:] if "guide_out" in guides else None,
            masks_out=masks.get("mask_out") if "guide_out" in guides else None,
            frontal_crop_original=crops["crops_front"], frontal_crop_edited=edited_frontal_crop(ctx, renderer),
            arcface=arcface_fn(ctx), clip_score=clip_score_fn(ctx), prompt=a.prompt,
        )
        has_out = views.cameras_out is not None
        metrics["fidelity"] = edit_fidelity_metrics(fid_edited, fid_original, after_all[n_in:] if has_out else None,
                                                    before_all[n_in:] if has_out else None)
        metrics["domain_check"] = ctx.results.get("domain_check")  # how far the guides can be trusted
        write_json_atomic(metrics, work / "metrics.json")
        out["video"] = video.name
        out["rendered_views"] = dict(renderer.rendered)
        return out

    return ctx.step("outputs", dict(frames=a.video_frames), compute, oom_flags=["--render-chunk", "--video-frames"])


def grid_rows(n: int, max_rows: int):
    """At most ``max_rows`` evenly spaced row indices of ``n`` views."""
    import torch

    return torch.linspace(0, n - 1, min(n, max_rows)).round().long().unique()


def edited_frontal_crop(ctx: EditContext, renderer) -> Any:
    """The edited run's frontal view (alpha 1, through the outputs' ``renderer``), cropped like the original
    frontal crop."""
    from nerfeditor_ns.edit.crops import extract_crops

    crops = ctx.results["crops"]
    front = renderer.render("edited", ctx.frontal_camera(), 1.0, description="Edited frontal view")
    return extract_crops(front["rgb"], crops["windows_front"], int(crops["resolution"]))


def arcface_fn(ctx: EditContext):
    """ArcFace embedding for the identity metric (None without --arcface)."""
    if ctx.networks.arcface is None:
        return None
    net = ctx.identity().net
    return lambda x: net(x.to(next(net.parameters()).device)).cpu()


def clip_score_fn(ctx: EditContext):
    """CLIP image-text similarity for --prompt edits (None for the other edits)."""
    if ctx.mode != "prompt":
        return None
    from nerfeditor_ns.gan.edits import clip_image_embedding, clip_text_embedding

    clip = ctx.clip()

    def score(images, text):
        return (clip_image_embedding(clip, images.to(clip.device)) * clip_text_embedding(clip, text)).sum(-1).cpu()

    return score
