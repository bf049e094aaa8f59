"""Steps 1-3 of an edit (paper Fig. 2, left): render the original scene, crop the subject, mask the foreground.

Each step is a function of the :class:`~nerfeditor_ns.edit.context.EditContext` that returns its (cached) result;
the per-view results are keyed by the view-set tags ``front`` / ``in`` / ``out`` of :meth:`EditContext.view_sets`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from nerfeditor_ns.edit.context import EditContext, checkpoint_id, net_id
from nerfeditor_ns.edit.errors import EditError

if TYPE_CHECKING:  # pragma: no cover
    from nerfeditor_ns.edit.masks import MaskSource

MIN_MASK_FRACTION = 0.01  # below this foreground fraction of the frontal view the NeRF-based masks are not trusted


def save_image(image: Any, path: Path) -> None:
    """Save [H,W,3] in [0,1] or [1,3,H,W] / [3,H,W] in [-1,1] as PNG."""
    from PIL import Image

    from nerfeditor_ns.io_utils import to_uint8

    t = image.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    if t.ndim == 3 and t.shape[0] == 3 and t.shape[-1] != 3:
        t = (t.permute(1, 2, 0) + 1) / 2
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(t)).save(path)


def frontal_geometry(geo):
    """The capture geometry with the frontal orbit view as camera 0 (the frontal camera batch has one camera)."""
    return dataclasses.replace(geo, frontal_index=0)


def step_render(ctx: EditContext) -> Dict[str, Any]:
    """Step 1 — Sec. 3.2 (Fig. 2 "render"): render the frontal view, V_in and V_out of the original scene
    (alpha = 0): colour, depth and accumulation per view."""
    from nerfeditor_ns.edit.render import render_views

    a = ctx.args
    inputs = dict(
        frontal=a.frontal_camera, yaw=a.in_domain_yaw, pitch=a.in_domain_pitch, n_yaw=a.num_in_yaw,
        n_pitch=a.num_in_pitch, n_out=a.num_out_domain, scale=a.render_scale, ckpt=checkpoint_id(a.load_config),
    )

    def compute():
        _, pipeline = ctx.original()
        out: Dict[str, Any] = {"frontal_index": int(ctx.views().geometry.frontal_index)}
        for tag, cams in ctx.view_sets():
            r = render_views(pipeline, cams, alpha=0.0, chunk=a.render_chunk, description=f"Rendering {tag} views")
            out.update({f"rgb_{tag}": r["rgb"], f"depth_{tag}": r["depth"], f"acc_{tag}": r["accumulation"]})
        return out

    return ctx.step("render", inputs, compute, oom_flags=["--render-chunk", "--render-scale"])


def step_crops(ctx: EditContext) -> Dict[str, Any]:
    """Step 2 — Sec. 3.2 (aligned GAN inputs): one 3D subject box projected into every view; square crops at the
    GAN resolution, so every view frames the subject like the frontal one."""
    from nerfeditor_ns.edit.crops import SubjectBox, extract_crops, project_box
    from nerfeditor_ns.edit.face_alignment import frontal_box

    a = ctx.args
    render = ctx.results["render"]

    def compute():
        res = int(ctx.generator().resolution)
        geo_front = frontal_geometry(ctx.views().geometry)
        try:
            box, aligned_by, note = frontal_box(geo_front, ctx.frontal_camera(), render["rgb_front"][0],
                                                render["depth_front"][0], render["acc_front"][0], a.face_alignment)
        except ValueError as err:
            raise EditError(str(err), "pass --face-alignment auto (landmarks when possible), silhouette, or none (a "
                            "subject that is not a face); landmarks need the `faces` extra and a face in the frontal "
                            "view (--frontal-camera).") from None
        if note:
            ctx.console.print(f"[yellow]note:[/yellow] {note}")
        box = SubjectBox(box.centre, box.half_size * a.box_scale, box.rotation)
        out: Dict[str, Any] = {"box": box.to_dict(), "resolution": res, "aligned_by": aligned_by}
        try:
            for tag, cams in ctx.view_sets():
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

    return ctx.step("crops", dict(box_scale=a.box_scale, net=net_id(ctx.generator_file()),
                                  alignment=a.face_alignment), compute,
                    oom_flags=["--render-scale"])


def capture_dir(config) -> Optional[Path]:
    """The capture's data folder of a run config (the parent of a transforms.json given as data); None if unset."""
    dm = config.pipeline.datamanager
    data = getattr(dm, "data", None)
    if data is None:
        data = getattr(getattr(dm, "dataparser", None), "data", None)
    if data is None:
        data = getattr(config, "data", None)
    if data is None:
        return None
    data = Path(data)
    return data.parent if data.is_file() else data


def mask_source(ctx: EditContext) -> Optional["MaskSource"]:
    """Where this edit's foreground masks come from: ``--mask-dir``, else ``<data>/foreground_masks``, else None
    (NeRF-derived); a folder that does not match the training images is refused with an :class:`EditError`
    (:func:`nerfeditor_ns.edit.masks.resolve_mask_source`)."""
    from nerfeditor_ns.edit.masks import resolve_mask_source

    config, pipeline = ctx.original()
    names = [Path(p).name for p in pipeline.datamanager.train_dataparser_outputs.image_filenames]
    cams = ctx.cameras()
    sizes = list(zip(cams.height.reshape(-1).tolist(), cams.width.reshape(-1).tolist()))
    return resolve_mask_source(ctx.args.mask_dir, capture_dir(config), names, sizes)


def _carry_mask_folder(ctx: EditContext, source: "MaskSource", nerf_masks: Dict[str, Any]) -> Dict[str, Any]:
    """The folder's masks carried to every view set through the nearest training camera (masks.transfer_masks);
    the NeRF-derived ``nerf_masks`` where they cannot be."""
    import copy

    import torch

    from nerfeditor_ns.edit.context import rescaled
    from nerfeditor_ns.edit.masks import nearest_capture_views, read_mask, transfer_masks
    from nerfeditor_ns.edit.render import render_views

    a, render = ctx.args, ctx.results["render"]
    centre = ctx.views().geometry.centre
    cams = copy.deepcopy(ctx.cameras() if a.render_scale == 1.0 else rescaled(ctx.cameras(), a.render_scale))
    if cams.distortion_params is not None:  # the projection is pinhole: render the training views the same way
        cams.distortion_params = torch.zeros_like(cams.distortion_params)
    capture_dirs = cams.camera_to_worlds.reshape(-1, 3, 4)[:, :, 3].float().cpu() - centre
    index = {tag: nearest_capture_views(vc.camera_to_worlds.reshape(-1, 3, 4)[:, :, 3].float().cpu() - centre,
                                        capture_dirs)[0] for tag, vc in ctx.view_sets()}
    needed = sorted({int(j) for idx in index.values() for j in idx.tolist() if j >= 0})
    _, pipeline = ctx.original()
    masks, depth = {}, {}
    for j in needed:
        h, w = int(cams.height.reshape(-1)[j]), int(cams.width.reshape(-1)[j])
        masks[j] = read_mask(source.files[j], (h, w))
        depth[j] = render_views(pipeline, cams[j : j + 1], alpha=0.0, chunk=a.render_chunk, progress=False)["depth"][0]
    out: Dict[str, Any] = {"views_from_masks": {}}
    for tag, vc in ctx.view_sets():
        mask, carried = transfer_masks(vc, render[f"depth_{tag}"], render[f"acc_{tag}"], cams, index[tag], masks,
                                       depth, nerf_masks[f"mask_{tag}"])
        out[f"mask_{tag}"] = mask
        out["views_from_masks"][tag] = {"views": int((index[tag] >= 0).sum()), "of": int(len(index[tag])),
                                        "pixels_carried": float(carried.float().mean())}
    return out


def step_masks(ctx: EditContext) -> Dict[str, Any]:
    """Step 3 — Sec. 3.4 (foreground of the guide images): masks of ``--mask-dir`` or of the capture's
    ``foreground_masks/`` carried to the views through the NeRF's depth, else (and wherever they cannot be carried)
    masks from the NeRF's depth inside the subject box. They are needed this early because the stylized crops of
    step 7 are pasted back through them."""
    from nerfeditor_ns.edit.crops import SubjectBox, paste_mask
    from nerfeditor_ns.edit.masks import masks_from_render

    render, crops = ctx.results["render"], ctx.results["crops"]
    source = mask_source(ctx)

    def compute():
        box = SubjectBox.from_dict(crops["box"])
        out: Dict[str, Any] = {}
        for tag, cams in ctx.view_sets():
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
            for tag, _ in ctx.view_sets():
                h, w = render[f"rgb_{tag}"].shape[1:3]
                out[f"mask_{tag}"] = paste_mask(crops[f"windows_{tag}"], h, w)
            out["source"] = "crop_window"
        out["nerf_masks"] = out["source"]  # what the NeRF-derived masks are (the refusal after this step reads it)
        if source is not None:
            out.update(_carry_mask_folder(ctx, source, out))
            out["source"], out["mask_folder"] = source.kind, str(source.folder)
            ctx.console.print(f"masks: {source.kind} ({source.folder}) carried to " + ", ".join(
                f"{v['views']}/{v['of']} {tag} views" for tag, v in out["views_from_masks"].items())
                + f"; NeRF-derived ({out['nerf_masks']}) elsewhere")
        return out

    inputs = {"folder": source.identity()} if source is not None else {}
    return ctx.step("masks", inputs, compute, oom_flags=["--render-scale"])
