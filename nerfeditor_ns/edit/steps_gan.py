"""Steps 4-7 of an edit (paper Fig. 2, middle): invert the frontal crop, train the latent code adjustor, finetune a copy
of the generator on the in-domain pairs, and edit the frontal code. The guide images are drawn in ``steps_guides.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from nerfeditor_ns.edit.context import EditContext, net_id
from nerfeditor_ns.edit.errors import EditError
from nerfeditor_ns.edit.steps_scene import save_image

DIRECTION_FILE_FIX = "use a direction saved for this generator."


def read_image(path: Path, size: int) -> Any:
    """An image file as a [1,3,size,size] tensor in [-1,1] (centre square crop, RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((size, size), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None] * 2 - 1


def poses(theta, phi):
    """(yaw, pitch) pairs ``[N, 2]`` as the adjustor takes them."""
    import torch

    return torch.stack([theta, phi], dim=-1).to(torch.float32)


def invert_image(ctx: EditContext, image: Any, generator=None, use_encoder: bool = True) -> Any:
    """W+ code of a [1,3,R,R] image in [-1,1]: e4e + refinement MLP (Sec. 3.2), else optimisation (projection)."""
    import torch

    G = generator if generator is not None else ctx.generator()
    image = image.to(ctx.device)
    perceptual = ctx.perceptual()
    if use_encoder and ctx.networks.encoder is not None:
        from nerfeditor_ns.gan.encoder import RefinementMLP, refine_inversion

        torch.manual_seed(ctx.args.seed)
        refiner = RefinementMLP(w_dim=G.w_dim, num_ws=G.num_ws).to(ctx.device)
        return refine_inversion(ctx.encoder(), refiner, G, image, steps=ctx.args.projection_steps,
                                perceptual=perceptual, identity=ctx.identity()).detach().cpu()
    from nerfeditor_ns.gan.projection import project

    return project(G, image, steps=ctx.args.projection_steps, perceptual=perceptual, seed=ctx.args.seed).detach().cpu()


def step_invert(ctx: EditContext) -> Dict[str, Any]:
    """Step 4 — Sec. 3.2 (inversion): the W+ code w of the frontal crop (e4e + refinement MLP, or projection)."""
    import torch

    crops = ctx.results["crops"]
    n = ctx.networks
    style = ctx.mode == "style_image"  # the subject's own code w_subject in the art generator (App. D)
    inputs = dict(steps=ctx.args.projection_steps, seed=ctx.args.seed, enc=None if style else net_id(n.encoder),
                  vgg=net_id(n.vgg), arc=None if style else net_id(n.arcface))
    if style:
        inputs["art_generator"] = True

    def compute():
        w = invert_image(ctx, crops["crops_front"], use_encoder=not style)
        with torch.no_grad():
            recon = ctx.generator().synthesis(w.to(ctx.device), noise_mode="const").cpu()
        save_image(recon, ctx.run.work / "frontal_inversion.png")
        if style:  # no domain check: the hidden mapper, not this code, carries the subject (any class)
            return {"w_frontal": w[0], "fidelity": None}
        from nerfeditor_ns.edit.domain_steps import inversion_fidelity

        return {"w_frontal": w[0], "fidelity": inversion_fidelity(ctx, recon, crops["crops_front"])}

    return ctx.step("invert", inputs, compute, oom_flags=["--projection-steps (no effect on memory)", "--device cpu"])


def adjustor_config(ctx: EditContext):
    """Latent code adjustor settings: k = --num-components (at most the GAN's w_dim); --fixed-basis holds V fixed
    (the "w/o differentiable" ablation, Tab. 5)."""
    from nerfeditor_ns.gan.adjustor import LatentCodeAdjustorConfig

    G = ctx.generator()
    return LatentCodeAdjustorConfig(num_components=min(ctx.args.num_components, int(G.w_dim)), seed=ctx.args.seed,
                                    differentiable=not ctx.args.fixed_basis)


def step_adjustor(ctx: EditContext) -> Dict[str, Any]:
    """Step 5 — Sec. 3.2, Eq. 1 (with the decomposition, Eqs. 7-9): train the latent code adjustor on the in-domain
    (crop, pose) pairs."""
    from nerfeditor_ns.gan.adjustor import train_adjustor
    from nerfeditor_ns.gan.losses import ReconstructionLoss, ReconstructionLossConfig

    a = ctx.args
    crops, w = ctx.results["crops"], ctx.results["invert"]["w_frontal"]
    if ctx.mode == "style_image":
        from nerfeditor_ns.edit.steps_style import SKIPPED

        return ctx.step("adjustor", dict(skip=True), lambda: {"skipped": SKIPPED})

    def compute():
        views = ctx.views()
        loss = ReconstructionLoss(
            ReconstructionLossConfig(vgg_path=ctx.networks.vgg, arcface_path=ctx.networks.arcface,
                                     perceptual_weight=0.8 if ctx.networks.vgg else 0.0,
                                     identity_weight=0.1 if ctx.networks.arcface else 0.0)
        ).to(ctx.device)
        result = train_adjustor(
            ctx.generator(), w.to(ctx.device), crops["crops_in"], poses(views.theta_in, views.phi_in),
            steps=a.adjustor_steps, loss=loss, config=adjustor_config(ctx), batch_size=a.adjustor_batch, seed=a.seed,
        )
        state = {k: v.detach().cpu() for k, v in result.adjustor.state_dict().items()}
        return {"state": state, "final_loss": result.history["total"][-1],
                "differentiable": bool(result.adjustor.decomposition.learnable)}

    inputs = dict(steps=a.adjustor_steps, batch=a.adjustor_batch, k=a.num_components, seed=a.seed,
                  fixed_basis=a.fixed_basis)
    return ctx.step("adjustor", inputs, compute, oom_flags=["--adjustor-batch", "--device cpu"])


def load_adjustor(ctx: EditContext):
    """Rebuild the trained adjustor from the cached state."""
    from nerfeditor_ns.gan.adjustor import LatentCodeAdjustor

    state = ctx.results["adjustor"]["state"]
    adj = LatentCodeAdjustor(adjustor_config(ctx), covariance=state["decomposition.cov_w"])
    adj.load_state_dict(state)
    return adj.to(ctx.device).eval()


GEN_FINETUNED_FILE = "generator_finetuned.pt"
"""File in the edit's cache holding the finetuned synthesis weights (weights-only)."""


def step_gen_finetune(ctx: EditContext) -> Dict[str, Any]:
    """Step 6 — Sec. 4 ("train the latent code adjustor and finetune the StyleGAN"), Tab. 5 ablation: finetune a copy
    of the generator's synthesis weights on the in-domain (crop, adjusted code w + V(k*d)) pairs (pivotal tuning with a
    locality regulariser); records the generator's fidelity to the crops before and after. 0 steps = the paper's
    "latent code adjustor w/o finetuning"; --style-image skips it (the art generator's hidden mapper makes every
    guide)."""
    import dataclasses

    import torch

    from nerfeditor_ns.gan import generator_finetune as gf
    from nerfeditor_ns.gan.losses import ReconstructionLoss, ReconstructionLossConfig

    a = ctx.args
    crops, w = ctx.results["crops"], ctx.results["invert"]["w_frontal"]
    skip = ctx.mode == "style_image"
    cfg = gf.GeneratorFinetuneConfig(steps=a.generator_finetune_steps, batch_size=a.adjustor_batch, seed=a.seed)

    def compute():
        if skip:
            from nerfeditor_ns.edit.steps_style import SKIPPED

            return {"steps": 0, "skipped": SKIPPED}
        G = ctx.generator()
        views = ctx.views()
        with torch.no_grad():
            codes, _ = load_adjustor(ctx)(w.to(ctx.device), poses(views.theta_in, views.phi_in).to(ctx.device))
        codes, targets = codes.detach(), crops["crops_in"]
        loss = ReconstructionLoss(
            ReconstructionLossConfig(vgg_path=ctx.networks.vgg, arcface_path=ctx.networks.arcface,
                                     perceptual_weight=0.8 if ctx.networks.vgg else 0.0,
                                     identity_weight=0.1 if ctx.networks.arcface else 0.0)
        ).to(ctx.device)
        perceptual = ctx.perceptual()
        before = gf.generator_fidelity(gf.generate(G, codes, synthesis_batch(ctx)), targets, perceptual)
        result = gf.finetune_generator(G, codes, targets.to(ctx.device), cfg, loss=loss)
        after = gf.generator_fidelity(gf.generate(result.generator, codes, synthesis_batch(ctx)), targets, perceptual)
        out: Dict[str, Any] = {"steps": cfg.steps, "lr": cfg.lr, "locality_weight": cfg.locality_weight,
                               "locality_radius_w": result.radius, "fidelity_before": before, "fidelity_after": after,
                               "codes": codes.cpu()}
        if cfg.steps > 0:
            gf.save_finetuned_synthesis(result.generator, G, ctx.run.cache / GEN_FINETUNED_FILE)
            ctx.nets["generator_finetuned"] = result.generator
            out["file"] = GEN_FINETUNED_FILE
            out["final_loss"] = result.history["total"][-1]
        ctx.console.print(
            f"generator fidelity to the in-domain crops: PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, "
            f"SSIM {before['ssim']:.3f} -> {after['ssim']:.3f}"
        )
        return out

    inputs = dict(dataclasses.asdict(cfg), skip=skip, vgg=net_id(ctx.networks.vgg), arc=net_id(ctx.networks.arcface))
    return ctx.step("gen_finetune", inputs, compute, oom_flags=["--adjustor-batch", "--device cpu"])


def finetuned_generator(ctx: EditContext):
    """G': the generator finetuned by step gen_finetune (the given generator when it ran 0 steps)."""
    result = ctx.results["gen_finetune"]
    if "file" not in result:
        return ctx.generator()
    if "generator_finetuned" not in ctx.nets:
        from nerfeditor_ns.gan.generator_finetune import load_finetuned_generator

        G = load_finetuned_generator(ctx.generator(), ctx.run.cache / result["file"])
        ctx.nets["generator_finetuned"] = G.to(ctx.device)
    return ctx.nets["generator_finetuned"]


def check_component(index: int, available: int) -> None:
    """Refuse ``pc:INDEX`` outside the decomposition's ``available`` components."""
    if not 0 <= int(index) < available:
        raise EditError(f"--direction pc:{index} is outside the {available} components of the decomposition.",
                        f"use a component below {available} or raise --num-components.")


def step_w_style(ctx: EditContext) -> Dict[str, Any]:
    """Step 7 — Sec. 3.2 ("any existing latent code editing method on the frontal latent code"), Sec. 4.5: the edited
    frontal code w_style for the chosen EDIT."""
    import torch

    from nerfeditor_ns.gan import edits

    a, mode = ctx.args, ctx.mode
    w = ctx.results["invert"]["w_frontal"][None]
    inputs: Dict[str, Any] = dict(mode=mode, steps=a.projection_steps, clip_steps=a.clip_steps,
                                  clip=net_id(ctx.networks.clip), clip_model=ctx.networks.clip_model,
                                  style=net_id(ctx.networks.style_generator))

    if mode == "style_image":
        from nerfeditor_ns.edit.steps_style import style_codes

        inputs.update(strength=float(a.style_strength))
        return ctx.step("w_style", inputs, lambda: style_codes(ctx), oom_flags=["--device cpu"])

    def compute():
        G = ctx.generator()
        res = int(G.resolution)
        if mode == "reference_image":
            w_ref = invert_image(ctx, read_image(a.reference_image, res))
            w_style = edits.style_mix(w, w_ref, a.mix_layer)
        elif mode == "edited_image":
            w_style = invert_image(ctx, read_image(a.edited_image, res))
        elif mode == "direction":
            spec = ctx.checked.direction
            vectors, values = (t.detach().float().cpu() for t in load_adjustor(ctx).basis())
            if spec.kind == "pc":
                check_component(spec.component, vectors.shape[1])
            try:
                w_style = edits.apply_direction_spec(w, spec, vectors, values)
            except ValueError as err:  # DirectionFileError, shape mismatch with the generator
                raise EditError(f"--direction {a.direction}: {err}", DIRECTION_FILE_FIX) from None
        elif mode == "prompt":
            w_style = edits.clip_optimize(G, w[0].to(ctx.device), a.prompt, ctx.clip(), steps=a.clip_steps,
                                          id_loss=ctx.identity()).w.detach().cpu()
        else:  # pragma: no cover - validate_inputs refuses other modes (style_image: steps_style.style_codes)
            raise EditError(f"unknown edit mode {mode}")
        w_style = w_style.reshape(1, G.num_ws, G.w_dim).detach().cpu()
        _, gen = ctx.edit_generator()
        with torch.no_grad():
            img = gen.synthesis(w_style.to(ctx.device), noise_mode="const").cpu()
        save_image(img, ctx.run.work / "frontal_edited.png")
        return {"w_style": w_style[0]}

    return ctx.step("w_style", inputs, compute, oom_flags=["--device cpu"])


CUDA_SYNTHESIS_BATCH = 16
"""Images per generator call when synthesising without gradients on a GPU (at least; fewer, fuller kernels)."""


def synthesis_batch(ctx: EditContext) -> int:
    """Images per generator call when synthesising without gradients: ``--adjustor-batch`` on the CPU (results as
    before), at least :data:`CUDA_SYNTHESIS_BATCH` on a GPU."""
    batch = int(ctx.args.adjustor_batch)
    return batch if ctx.device.type == "cpu" else max(batch, CUDA_SYNTHESIS_BATCH)
