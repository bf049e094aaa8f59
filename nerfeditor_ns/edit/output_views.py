"""The cameras of an edit's outputs and the original scene's renders at them (step ``original_views``).

The outputs step (``steps_nerf.step_outputs``) compares the edited run with the original one at:

- ``turntable``: the before/after video, the captured yaw arc there and back (``outputs.turntable_cameras``);
- ``recon``: up to 3 training cameras at the edit's render scale (reconstruction at alpha 0 against the capture);
- ``fidelity``: every training camera at <= ``eval.fidelity.METRICS_MAX_SIDE`` px (metrics.json's fidelity block);

besides the render step's frontal view, V_in and V_out. The original scene's side of these (alpha 0) does not
depend on the edit, so step ``original_views`` renders it once per scene (it is a scene-cache step) and the outputs
step renders only the edited run (:func:`outputs_renderer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from nerfeditor_ns.edit.context import EditContext, rescaled

if TYPE_CHECKING:
    from nerfeditor_ns.edit.view_renders import ViewRenderer

OUTPUT_SETS = ("turntable", "recon", "fidelity")


def recon_indices(num_cameras: int):
    """Up to 3 evenly spaced training camera indices (the reconstruction check)."""
    import torch

    return torch.linspace(0, num_cameras - 1, min(3, num_cameras)).round().long().unique()


def output_cameras(ctx: EditContext) -> Dict[str, Any]:
    """``{"turntable", "recon", "fidelity"}`` camera batches of the outputs (see the module docstring)."""
    from nerfeditor_ns.edit.outputs import turntable_cameras
    from nerfeditor_ns.edit.steps_scene import frontal_geometry
    from nerfeditor_ns.eval.fidelity import metrics_scale

    def make():
        a = ctx.args
        views = ctx.views()
        train = ctx.cameras()
        recon = train[recon_indices(len(train))]
        if a.render_scale != 1.0:
            recon = rescaled(recon, a.render_scale)
        h, w = (round(int(t.max()) * a.render_scale) for t in (train.height, train.width))
        scale = a.render_scale * metrics_scale(h, w)
        return {
            "turntable": turntable_cameras(views.cameras_in[0:1], frontal_geometry(views.geometry), a.video_frames,
                                           mode="arc"),
            "recon": recon,
            "fidelity": train if scale == 1.0 else rescaled(train, scale),
        }

    return ctx._once("output_cameras", make)


def register_originals(renderer: "ViewRenderer", ctx: EditContext, with_outputs: bool = True) -> None:
    """Give ``renderer`` the original scene's renders (model ``original``, alpha 0) that earlier steps made: the
    render step's views, and (``with_outputs``) the original_views step's."""
    render = ctx.results["render"]
    for tag, cams in ctx.view_sets():
        renderer.register("original", cams, 0.0, {"rgb": render[f"rgb_{tag}"], "depth": render[f"depth_{tag}"],
                                                  "accumulation": render[f"acc_{tag}"]})
    if with_outputs:
        originals = ctx.results["original_views"]
        for name, cams in output_cameras(ctx).items():
            renderer.register("original", cams, 0.0, {"rgb": originals[f"rgb_{name}"]})


def step_original_views(ctx: EditContext) -> Dict[str, Any]:
    """The original scene (alpha 0) at the outputs' cameras (turntable, reconstruction and fidelity views); views
    the render step already rendered are taken from it."""
    from nerfeditor_ns.edit.view_renders import ViewRenderer
    from nerfeditor_ns.eval.fidelity import METRICS_MAX_SIDE

    a = ctx.args

    def compute():
        _, original = ctx.original()
        renderer = ViewRenderer({"original": original}, a.render_chunk)
        register_originals(renderer, ctx, with_outputs=False)
        out: Dict[str, Any] = {}
        for name, cams in output_cameras(ctx).items():
            out[f"rgb_{name}"] = renderer.render("original", cams, 0.0, description=f"Original ({name} views)")["rgb"]
        out["rendered_views"] = renderer.rendered["original"]
        return out

    inputs = dict(frames=a.video_frames, scale=a.render_scale, metrics_side=METRICS_MAX_SIDE)
    return ctx.step("original_views", inputs, compute, oom_flags=["--render-chunk", "--video-frames"])


def outputs_renderer(ctx: EditContext, edited: Any) -> "ViewRenderer":
    """A renderer of ``original`` (every original render of the earlier steps registered) and ``edited``."""
    from nerfeditor_ns.edit.view_renders import ViewRenderer

    renderer = ViewRenderer({"original": ctx.original()[1], "edited": edited}, ctx.args.render_chunk)
    register_originals(renderer, ctx)
    return renderer
