"""The domain checks of ``ns-edit`` wired into its steps (the checks themselves: ``domain_check.py`` and
``capture_checks.py``).

- :func:`check_capture`: after the networks are checked, before anything is written: the frontal camera index
  against the loaded run's training cameras, and the yaw the capture spans against the in/out-of-domain split (which
  follows the capture where the flags leave it open).
- :func:`inversion_fidelity`: called by the ``invert`` step: the frontal crop's reconstruction figures and the
  generator's cached self-inversion calibration (cached with the step's result).
- :func:`check_after_step`: between steps: after ``masks`` a run that renders nothing in the subject box is refused;
  after ``invert`` the generator's fidelity on the crop is judged (``--force`` overrides, recorded in
  ``ctx.results["domain_check"]`` for edit.json and metrics.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:  # pragma: no cover
    from nerfeditor_ns.edit.context import EditContext


def check_capture(ctx: EditContext) -> None:
    """Refuse a capture that cannot give the views the flags ask for (loads the original run; writes nothing)."""
    from nerfeditor_ns.edit.capture_checks import check_yaw_coverage

    a = ctx.args
    split = check_yaw_coverage(ctx.geometry().yaw, a.in_domain_yaw, a.num_in_yaw, a.num_out_domain)
    # the split follows the capture where the flags leave it open: every later step (the view set, the scene cache
    # keys, edit.json's settings) sees the resolved values
    a.in_domain_yaw, a.num_out_domain = split["in_domain_yaw"], split["num_out_domain"]
    for note in split["notes"]:
        ctx.checked.notes.append(note)
        ctx.console.print(f"[yellow]note:[/yellow] {note}")


def inversion_fidelity(ctx: EditContext, recon: "Any", crop: "Any") -> Dict[str, Any]:
    """The frontal crop's reconstruction figures and the generator's calibration (its own samples inverted with
    the same method and settings; cached per generator file and settings)."""
    from nerfeditor_ns.edit import domain_check as dc
    from nerfeditor_ns.edit.context import net_id
    from nerfeditor_ns.edit.steps_gan import invert_image

    n, a = ctx.networks, ctx.args
    config = dc.DomainCheckConfig(seed=a.seed)
    settings = dict(method="encoder" if n.encoder is not None else "projection", steps=a.projection_steps,
                    seed=a.seed, enc=net_id(n.encoder), vgg=net_id(n.vgg), arc=net_id(n.arcface),
                    num_samples=config.num_samples)

    def compute():
        ctx.console.print(f"domain check: calibrating {n.generator.name} on {config.num_samples} of its own samples "
                          "(once per generator and inversion settings)")
        return dc.calibrate(ctx.generator(), lambda image: invert_image(ctx, image), config)

    calibration = dc.cached_calibration(n.cache_dir, n.generator, settings, compute)
    return {"crop": dc.reconstruction_fidelity(recon, crop), "calibration": calibration}


def check_after_step(ctx: EditContext, name: str) -> None:
    """Refusals between steps: nothing rendered in the subject box (after ``masks``), the generator cannot
    represent the frontal crop (after ``invert``, with the frozen generator; ``--force`` overrides)."""
    from nerfeditor_ns.edit import capture_checks, domain_check

    if name == "masks":
        capture_checks.check_subject_rendered(ctx.results["crops"]["crops_front"],
                                              surface_in_box=ctx.results["masks"].get(
                                                  "nerf_masks", ctx.results["masks"].get("source")) == "nerf")
    elif name == "invert" and ctx.mode == "style_image":
        ctx.console.print("domain check: skipped for --style-image (the art generator's hidden mapper carries the "
                          "subject, of any class)")
    elif name == "invert":
        fidelity = ctx.results["invert"].get("fidelity")
        if fidelity is None:  # an inversion cached by an older version: measure it now
            import torch

            with torch.no_grad():
                recon = ctx.generator().synthesis(ctx.results["invert"]["w_frontal"][None].to(ctx.device),
                                                  noise_mode="const").cpu()
            fidelity = inversion_fidelity(ctx, recon, ctx.results["crops"]["crops_front"])
        limit = ctx.args.max_inversion_error_ratio
        config = domain_check.DomainCheckConfig(seed=ctx.args.seed, max_error_ratio=float(
            limit if limit is not None else domain_check.default_max_error_ratio(ctx.args.projection_steps)))
        report = domain_check.domain_report(fidelity["crop"], fidelity["calibration"], config)
        ctx.results["domain_check"] = domain_check.enforce(report, ctx.args.force, ctx.networks.generator)
        verdict = "passed" if report["passed"] else "FAILED, proceeding because of --force"
        ctx.console.print(f"domain check {verdict}: inversion error ratio {report['error_ratio']:.2f} "
                          f"(at most {report['max_error_ratio']:.2f})")
