"""Step 8 of an edit (paper Fig. 2, right): the guide images. Only the edit's change is moved onto the full-resolution
renders (``guide_transfer.py``), drawn by the finetuned generator G' in-domain (through the adjustor) and by G'_style
out-of-domain (through the hidden mapper), so a null edit gives the renders themselves. --style-image draws every
view through the art generator's hidden mapper (``steps_style.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from nerfeditor_ns.edit.context import EditContext, net_id
from nerfeditor_ns.edit.steps_gan import finetuned_generator, load_adjustor, poses


def hidden_mapper_for(ctx: EditContext, generator_path: Path, generator) -> Any:
    """The trained hidden mapper for a generator: --hidden-mapper, a finished cached one, or train one now."""
    from nerfeditor_ns.edit.mapper_cache import find_cached_mapper, mapper_cache_dir, mapper_config
    from nerfeditor_ns.gan.hidden_mapper import load_hidden_mapper
    from nerfeditor_ns.gan.hidden_mapper_training import get_or_train_hidden_mapper

    if ctx.networks.hidden_mapper is not None:
        return ctx.explicit_hidden_mapper(generator)
    cached = find_cached_mapper(ctx.networks.cache_dir, generator_path)
    if cached is not None:
        ctx.console.print(f"hidden mapper: using the cached {cached}")
        return load_hidden_mapper(cached, generator=generator, device=ctx.device)
    ctx.console.print(
        f"hidden mapper: none cached for {generator_path.name}; training one now ({ctx.args.mapper_steps} steps; "
        "`ns-edit train-mapper` does this ahead of time)."
    )
    config = mapper_config(vgg=ctx.networks.vgg, steps=ctx.args.mapper_steps, slim=ctx.networks.vgg is None,
                           seed=ctx.args.seed)
    return get_or_train_hidden_mapper(generator_path, config, cache_dir=mapper_cache_dir(ctx.networks.cache_dir),
                                      generator=generator, device=ctx.device)


def guides_out_of_domain(ctx: EditContext) -> bool:
    """Whether the out-of-domain views get guides (through the hidden mapper): there are such views and the edit is
    not the "w/o hidden mapper" ablation (--no-out-of-domain-guides, Fig. 9), which leaves them unguided."""
    return ctx.args.out_of_domain_guides and ctx.views().cameras_out is not None and "crops_out" in ctx.results["crops"]


def in_domain_change(ctx: EditContext) -> str:
    """The in-domain change actually used: ``--in-domain-change``, with "auto" resolved by the edit mode (colour-map
    for a reference image, whose style mixing takes the reference's colour layers; generator otherwise)."""
    choice = ctx.args.in_domain_change
    if choice == "auto":
        return "colour-map" if ctx.mode == "reference_image" else "generator"
    return choice


def step_guides(ctx: EditContext) -> Dict[str, Any]:
    """Step 8 — Sec. 3.2 (I_in, Eq. 1) and Sec. 3.3 (I_out, Alg. 1 at inference): the edit's change transferred onto
    the renders, G' = the finetuned generator: in-domain G'(w_style + V(k*d)) - G'(w + V(k*d)) per pose; out-of-domain
    the in-domain change as a colour map (default) or G'_style(H(crop), w_style) - G'_style(H(crop), w) through the
    hidden mapper of the given generator (``--out-of-domain-change hidden-mapper``); none with
    --no-out-of-domain-guides (the finetune then sees the in-domain guides only)."""
    from nerfeditor_ns.edit.capture_checks import check_guides
    from nerfeditor_ns.edit.crops import extract_crops
    from nerfeditor_ns.edit.guide_transfer import (
        CROP_FIT_MAX_ERROR,
        colour_change_guides,
        colour_fit_weights,
        fit_colour_change,
        fitted_colour_range,
        guides_from_crops,
        in_domain_crops,
        out_of_domain_crops,
        reproduction_error,
        resolve_colour_map_region,
    )

    a = ctx.args
    render, crops, masks = ctx.results["render"], ctx.results["crops"], ctx.results["masks"]
    w_style = ctx.results["w_style"]["w_style"]
    w_frontal = ctx.results["invert"]["w_frontal"]
    gen_path = ctx.generator_file()
    inputs = dict(mapper=net_id(ctx.networks.hidden_mapper), gen=net_id(gen_path), transfer="change",
                  out_of_domain=a.out_of_domain_guides, out_change=a.out_of_domain_change,
                  in_change=in_domain_change(ctx), clamp="fitted-range", map_region=a.colour_map_region,
                  map_region_rule=f"crop-if-error<={CROP_FIT_MAX_ERROR}")
    if ctx.mode == "style_image":
        inputs["style"] = [a.style_level, a.style_guides]

    def compute():
        if ctx.mode == "style_image":  # Sec. 4.5 / App. D: every view through the art generator's hidden mapper
            from nerfeditor_ns.edit.steps_style import style_transfer_guides

            out = style_transfer_guides(ctx, hidden_mapper_for(ctx, gen_path, ctx.generator()),
                                        guides_out_of_domain(ctx))
            check_guides(out)
            return out
        views = ctx.views()
        tuned = finetuned_generator(ctx)
        pose = poses(views.theta_in, views.phi_in)
        edited, unedited = in_domain_crops(tuned, load_adjustor(ctx), w_frontal, w_style, pose, a.adjustor_batch)
        out = {"crops_in": edited, "crops_in_unedited": unedited}
        use_map_out = guides_out_of_domain(ctx) and a.out_of_domain_change == "colour-map"
        in_change = in_domain_change(ctx)
        if in_change == "colour-map" or use_map_out:
            # the in-domain change as a function of colour, fitted on the crops' foreground (guide_transfer.py)
            fg = (extract_crops(masks["mask_in"].expand(-1, -1, -1, 3), crops["windows_in"], edited.shape[-1])[:, :1]
                  + 1) / 2
            error = reproduction_error(unedited, crops["crops_in"], fg)
            region = resolve_colour_map_region(a.colour_map_region, error)
            out["colour_map_fit"] = {"region": region, "reproduction_error": error}
            weights = colour_fit_weights(fg, region)
            out["colour_map"] = fit_colour_change(unedited, edited, weights)
            out["colour_range"] = fitted_colour_range(unedited, weights)
        if in_change == "colour-map":
            out["guide_in"], _ = colour_change_guides(render["rgb_in"], out["colour_map"], crops["windows_in"],
                                                      masks["mask_in"], colour_range=out["colour_range"])
        else:
            out["guide_in"] = guides_from_crops(render["rgb_in"], edited, unedited, crops["windows_in"],
                                                masks["mask_in"])["guide"]
        if use_map_out:
            out["guide_out"], _ = colour_change_guides(render["rgb_out"], out["colour_map"], crops["windows_out"],
                                                       masks["mask_out"], colour_range=out["colour_range"])
        elif guides_out_of_domain(ctx):
            mapper = hidden_mapper_for(ctx, gen_path, ctx.generator())  # trained for (and checked against) G
            edited, unedited = out_of_domain_crops(tuned, mapper, crops["crops_out"], w_frontal, w_style,
                                                   a.adjustor_batch)
            g_out = guides_from_crops(render["rgb_out"], edited, unedited, crops["windows_out"], masks["mask_out"])
            out.update({"crops_out": edited, "crops_out_unedited": unedited, "guide_out": g_out["guide"]})
        check_guides(out)  # NaN / constant guides are refused before anything is finetuned on them
        return out

    return ctx.step("guides", inputs, compute, oom_flags=["--adjustor-batch", "--device cpu"])
