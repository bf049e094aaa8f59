"""``ns-edit --style-image``: 3D style transfer with an art StyleGAN2 (paper Sec. 4.5, App. D; the formulas are in
:mod:`nerfeditor_ns.gan.style_transfer`). The parts of steps ``w_style`` and ``guides`` for this mode.

The art generator (``--style-generator``) is the edit's only generator: the ``invert`` step inverts the frontal crop
into it (``w_subject``), ``w_style`` inverts the painting (``w_painting``) and mixes the two by ``--style-strength``,
and ``guides`` maps EVERY view (in- and out-of-domain alike) of the captured subject into its hidden space at
``--style-level`` and draws it with the mixed codes. The face-only parts of the other modes (adjustor, generator
finetuning, domain check against the face generator) do not run; ``--face-alignment none`` drops the face layout of
the crops for a subject that is not a face.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from nerfeditor_ns.edit.context import EditContext
from nerfeditor_ns.edit.errors import EditError
from nerfeditor_ns.edit.steps_scene import save_image

SKIPPED = "style_image: the art generator's hidden mapper makes every guide"
"""Why the adjustor and generator finetuning do not run for --style-image (recorded in their step results)."""


def style_codes(ctx: EditContext) -> Dict[str, Any]:
    """Step ``w_style`` for --style-image: the painting inverted into the art generator (projection; an encoder
    belongs to the face generator) and App. D's mix ``(1 - s) w_subject + s w_painting``."""
    import torch

    from nerfeditor_ns.edit.steps_gan import invert_image, read_image
    from nerfeditor_ns.gan.style_transfer import mix_style_codes

    a = ctx.args
    G = ctx.generator()
    w_subject = ctx.results["invert"]["w_frontal"]
    w_painting = invert_image(ctx, read_image(a.style_image, int(G.resolution)), use_encoder=False)[0]
    with torch.no_grad():
        painting = G.synthesis(w_painting[None].to(ctx.device), noise_mode="const").cpu()
    save_image(painting, ctx.run.work / "style_image_inversion.png")
    w_style = mix_style_codes(w_subject, w_painting, a.style_strength)
    return {"w_style": w_style, "w_painting": w_painting, "strength": float(a.style_strength)}


def style_level(ctx: EditContext, mapper: Any) -> int:
    """--style-level checked against the hidden mapper's trained resolutions (default: its lowest)."""
    from nerfeditor_ns.gan.style_transfer import resolve_style_level

    try:
        return resolve_style_level(ctx.args.style_level, mapper.resolutions)
    except ValueError as err:
        raise EditError(
            f"--style-level: {err}",
            f"pass one of {sorted(mapper.resolutions)}, or train a mapper for that block: `ns-edit train-mapper "
            f"--generator {ctx.generator_file()} --resolution {ctx.args.style_level}` (then pass it with "
            "--hidden-mapper).",
        ) from None


def style_transfer_guides(ctx: EditContext, mapper: Any, out_of_domain: bool) -> Dict[str, Any]:
    """Step ``guides`` for --style-image: every view's crop stylised as ``G_style(H(crop), w)`` at the level, made
    a guide by --style-guides ("change": ``render + M * paste(G_style(H(crop), w) - G_style(H(crop), w_subject))``;
    "paste": the stylised crop pasted through the mask). The stylised frontal crop is saved as frontal_edited.png."""
    from nerfeditor_ns.edit.crops import paste_crops
    from nerfeditor_ns.edit.guide_transfer import guides_from_crops, out_of_domain_crops
    from nerfeditor_ns.gan.style_transfer import stylize_crops

    a = ctx.args
    render, crops, masks = ctx.results["render"], ctx.results["crops"], ctx.results["masks"]
    w_style = ctx.results["w_style"]["w_style"]
    w_subject = ctx.results["invert"]["w_frontal"]
    G = ctx.generator()
    level = style_level(ctx, mapper)
    out: Dict[str, Any] = {"style_level": level, "style_guides": a.style_guides}
    frontal = stylize_crops(G, mapper, crops["crops_front"], w_style, level, a.adjustor_batch)
    save_image(frontal.clamp(-1, 1), ctx.run.work / "frontal_edited.png")
    for tag in ("in", "out") if out_of_domain else ("in",):
        rgb, windows, mask = render[f"rgb_{tag}"], crops[f"windows_{tag}"], masks[f"mask_{tag}"]
        if a.style_guides == "change":
            edited, unedited = out_of_domain_crops(G, mapper, crops[f"crops_{tag}"], w_subject, w_style,
                                                   a.adjustor_batch, res=level)
            out[f"guide_{tag}"] = guides_from_crops(rgb, edited, unedited, windows, mask)["guide"]
            out[f"crops_{tag}_unedited"] = unedited
        else:
            edited = stylize_crops(G, mapper, crops[f"crops_{tag}"], w_style, level, a.adjustor_batch)
            out[f"guide_{tag}"], _ = paste_crops(rgb, edited.clamp(-1, 1), windows, mask=mask)
        out[f"crops_{tag}"] = edited
    return out


def style_record(ctx: EditContext) -> Optional[Dict[str, Any]]:
    """edit.json's ``style_transfer`` block (None for the other modes)."""
    if ctx.mode != "style_image":
        return None
    guides = ctx.results.get("guides", {})
    return {"style_generator": str(ctx.networks.style_generator), "level": guides.get("style_level"),
            "level_flag": ctx.args.style_level, "strength": float(ctx.args.style_strength),
            "guides": ctx.args.style_guides, "face_alignment": ctx.args.face_alignment}
