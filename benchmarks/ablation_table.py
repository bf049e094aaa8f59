"""The paper's ablations (Tab. 5 and Fig. 9) on one capture and one edit: a Markdown table and a PNG figure.

Runs the real ``ns-edit`` once per variant on the same trained run (the shared steps come from the scene cache, so
only what a variant changes is recomputed) and measures every edited run like ``benchmarks/edit_fidelity.py``
(against the ORIGINAL run's renders, in regions fixed independently of the edit's masks), plus the paper's metrics
that ``ns-edit`` writes into each run's ``metrics.json``. Variants (each one ns-edit flag or two):

- full method;
- w/o generator finetuning (``--generator-finetune-steps 0``, Tab. 5 "latent code adjustor w/o finetuning");
- w/o differentiable decomposition (``--fixed-basis``: V fixed to the PCA basis, Tab. 5);
- w/o L_br (``--background-loss-mult 0``, Tab. 5); w/o L_depth (``--depth-loss-mult 0``, Tab. 5);
- w/o hidden mapper (``--no-out-of-domain-guides``: no out-of-domain guides, Fig. 9);
- L_ori: this project freezes the original (alpha = 0) branch while finetuning (``freeze_original``), which keeps it
  exactly and makes L_ori (Eq. 4) zero; the paper holds it with L_ori instead. So the L_ori rows run with the
  original NOT frozen, as the paper does: "original not frozen" (L_ori on), "... w/o L_ori", "... w/o L_ori & L_br".
  Their ``alpha 0 recon`` column shows what L_ori keeps.

Columns: ``kept`` = background PSNR (min over all training views; pixels away from the person segmented on the
original renders, or the fixed outside ring without the ``faces`` extra); ``changed`` = views whose subject changed
by >= 0.03 mean |RGB| and the mean change; ``towards`` = the subject's face-colour distance to the reference before
-> after (mean over views); ``OOD/train`` = mean subject change out-of-domain / in training views (how evenly the
edit reaches the profiles); ``alpha 0 recon`` = PSNR of the edited run at alpha 0 against the captured images (vs
the original run's); then ``metrics.json``'s own figures: PSNR / SSIM outside the guide masks, LPIPS (needs
``--vgg``), ID (needs ``--arcface``), CLIP direction consistency (needs ``--clip``), FR after (before), APS and the
pose error (with the original renders' own error beside it; these three need the ``faces`` extra); a switched-off
metric reads "off" and its reason is printed once under the table. A variant without out-of-domain guides is
measured and shown at the out-of-domain views of the variants before it.

The figure has one row per variant (the original first) and one column per view, from the frontal training view
to the farthest profile the edit rendered (training views, then out-of-domain views). Usage::

    # CPU scale (the face capture at 64 px, the shipped 32 px generator, the demo's edit settings; ~30 min on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/ablation_table.py --workdir /tmp/ablation
    # full size, with the real networks on a GPU (the paper's table):
    python benchmarks/ablation_table.py --data CAPTURE --train-steps 30000 --settings ns-edit \\
        --generator ffhq-1024.pkl --network-args="--encoder e4e_ffhq_encode.pt --arcface model_ir_se50.pth \\
        --vgg vgg16.pth --clip ViT-B-32.pt" --workdir ablation_full
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_fidelity import (  # noqa: E402  (the same runs and measurements as the fidelity benchmark)
    EditResult,
    add_setup_arguments,
    device_name,
    edit_and_measure,
    edit_specs,
    prepare,
    read_json,
    render_original_training_views,
)

NOT_FROZEN = ["--freeze-original", "False"]
VARIANTS: List[Tuple[str, List[str]]] = [
    ("full method", []),
    ("w/o generator finetuning", ["--generator-finetune-steps", "0"]),
    ("w/o differentiable decomposition", ["--fixed-basis"]),
    ("w/o L_br", ["--background-loss-mult", "0"]),
    ("w/o L_depth", ["--depth-loss-mult", "0"]),
    ("w/o hidden mapper", ["--no-out-of-domain-guides"]),
    ("original not frozen (L_ori on)", NOT_FROZEN),
    ("original not frozen, w/o L_ori", NOT_FROZEN + ["--original-loss-mult", "0"]),
    ("original not frozen, w/o L_ori & L_br",
     NOT_FROZEN + ["--original-loss-mult", "0", "--background-loss-mult", "0"]),
]
"""(row label, ns-edit flags) of every variant, in the table's order."""

METRICS_COLUMNS = [("PSNR out", "psnr_outside_mask", "{:.2f}"), ("SSIM out", "ssim_outside_mask", "{:.4f}"),
                   ("LPIPS out", "lpips_outside_mask", "{:.4f}"), ("ID in-domain", "id_in_domain", "{:.3f}"),
                   ("CLIP dir. consistency", "clip_direction_consistency", "{:.3f}"),
                   ("FR after (before)", "fr_after", "{:.3f}"), ("APS", "aps", "{:.3f}"),
                   ("Pose err. deg (original)", "pose_error", "{:.2f}")]
"""(column, metrics.json key, format) of the paper's metrics copied from each edited run."""


def _metric(metrics: Dict[str, Any], key: str, fmt: str, notes: Dict[str, str]) -> str:
    entry = metrics.get(key)
    if not isinstance(entry, dict):
        return "n/a"
    if entry.get("off"):
        notes[key] = str(entry["off"])
        return "off"
    value = entry.get("value")
    if value is None:
        return "n/a"
    text = fmt.format(value)
    if key == "fr_after":  # FR before beside it (the original renders at the same views)
        before = metrics.get("fr_before", {}).get("value")
        text += f" ({before:.3f})" if before is not None else ""
    if key == "pose_error" and entry.get("original") is not None:  # the estimator's own error on the original
        text += f" ({entry['original']:.2f})"
    return text


def table_rows(results: List[EditResult]) -> Tuple[List[str], List[str]]:
    """The Markdown table's lines and the notes of switched-off metrics."""
    head = ["variant", "ns-edit flags", "s", "kept (dB, min)", "changed", "towards (dist)", "OOD/train",
            "alpha 0 recon (dB)"] + [c[0] for c in METRICS_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: Dict[str, str] = {}
    for r in results:
        flags = " ".join(r.edit.flags[2:]) or "(defaults)"  # the edit itself (--reference-image PATH) left out
        if r.error is not None:
            error = r.error.replace("|", "/")[:200]
            lines.append(f"| {r.variant} | `{flags}` | | ERROR: {error} |" + " |" * (len(head) - 4))
            continue
        f = r.figures
        kept_keys = [k for k in ("psnr_background_min_train", "psnr_background_min_ood") if f.get(k) is not None]
        if not kept_keys:
            kept_keys = [k for k in ("psnr_outside_min_train", "psnr_outside_min_ood") if f.get(k) is not None]
        kept = min(f[k] for k in kept_keys) if kept_keys else float("nan")
        frac = f.get("fraction_changed_person", f.get("fraction_changed", float("nan")))
        per_view = f.get("per_view", {})
        changes = [c for g in per_view.values() for c in ((g.get("person_change") or g.get("subject_change")) or [])
                   if c is not None and math.isfinite(c)]
        mean_change = sum(changes) / len(changes) if changes else float("nan")
        towards = f.get("towards_reference") or {}
        towards_s = (f"{towards['distance_before']:.3f} -> {towards['mean_distance_after']:.3f}"
                     if "distance_before" in towards else "n/a")
        ratio = (f.get("spread") or {}).get("ratio_out_to_in")
        metrics = read_json(r.run_dir / "metrics.json").get("metrics", {})
        recon = metrics.get("reconstruction_psnr", {}).get("value")
        before = metrics.get("reconstruction_psnr_before", {}).get("value")
        recon_s = "n/a" if recon is None else f"{recon:.2f} (of {before:.2f})" if before is not None else f"{recon:.2f}"
        cells = [r.variant, f"`{flags}`", f"{r.seconds:.0f}{'*' if r.reused else ''}", f"{kept:.2f}",
                 f"{100 * frac:.0f} % ({mean_change:.3f})", towards_s, "n/a" if ratio is None else f"{ratio:.2f}",
                 recon_s] + [_metric(metrics, key, fmt, notes) for _, key, fmt in METRICS_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines, [f"- off: {note}" for note in notes.values()]


def view_order(train_cams, ood_cameras) -> Tuple[List[int], List[int]]:
    """Columns of the figure: 5 training views from the frontal one to the farthest on the side the capture reaches
    farther, then the out-of-domain views on that side from near to far (indices into the training / OOD renders)."""
    import torch

    from nerfeditor_ns.edit.views import analyse_capture

    geo = analyse_capture(train_cams)
    yaw = geo.yaw
    side = 1.0 if float(yaw.max()) >= -float(yaw.min()) else -1.0
    reach = float((yaw * side).max())
    train_cols: List[int] = []
    for fraction in torch.linspace(0, 1, 5).tolist():
        idx = int(((yaw * side) - fraction * reach).abs().argmin())
        if idx not in train_cols:
            train_cols.append(idx)
    ood_cols: List[int] = []
    if ood_cameras is not None:
        ood_yaw, _ = geo.angles(ood_cameras.camera_to_worlds.detach().cpu().float()[:, :, 3])
        on_side = [(float(y * side), i) for i, y in enumerate(ood_yaw) if float(y * side) > reach * 0.5]
        ood_cols = [i for _, i in sorted(on_side)][:3]
    return train_cols, ood_cols


def save_figure(results: List[EditResult], original_train, train_cams, path: Path, scale: int = 2) -> Optional[Path]:
    """Rows = the original, then every variant; columns = views from frontal to profile (see :func:`view_order`)."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    done = [r for r in results if r.error is None and r.renders.get("train") is not None]
    if not done:
        return None
    ood_cams = next((r.renders.get("ood_cameras") for r in done if r.renders.get("ood_cameras") is not None), None)
    train_cols, ood_cols = view_order(train_cams, ood_cams)
    ood_original = next((r.renders.get("ood_original") for r in done if r.renders.get("ood_original") is not None),
                        None)

    def row(train, ood) -> np.ndarray:
        tiles = [train[i] for i in train_cols]
        for i in ood_cols:
            tiles.append(ood[i] if ood is not None and i < ood.shape[0] else torch.zeros_like(train[0]))
        strip = torch.cat(tiles, dim=1).clamp(0, 1)
        return (strip.numpy() * 255).round().astype(np.uint8)

    rows = [("original", row(original_train, ood_original))]
    rows += [(r.variant, row(r.renders["train"], r.renders.get("ood"))) for r in done]
    h, w = rows[0][1].shape[:2]
    label_w = 230
    canvas = Image.new("RGB", (label_w + w * scale, len(rows) * h * scale + 16), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 2), f"training views: frontal -> {len(train_cols)} | out-of-domain: {len(ood_cols)}",
              fill="black")
    for k, (label, strip) in enumerate(rows):
        y = 16 + k * h * scale
        canvas.paste(Image.fromarray(strip).resize((w * scale, h * scale), Image.Resampling.NEAREST), (label_w, y))
        draw.text((4, y + h * scale // 2 - 6), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--edit", choices=["reference", "reference-2"], default="reference",
                        help="the edit every variant makes (reference: the demo's darker reference image)")
    parser.add_argument("--network-args", default="",
                        help="ns-edit network flags added to every edit, as one string (e.g. \"--vgg vgg16.pth "
                             "--arcface model_ir_se50.pth\"): they switch on LPIPS, ID and CLIP columns")
    parser.add_argument("--variants", nargs="+", default=None, metavar="LABEL",
                        help=f"run only these rows (default: all): {', '.join(v for v, _ in VARIANTS)}")
    parser.add_argument("--figure", type=Path, default=None, help="PNG figure (default <workdir>/ablation.png)")
    args = parser.parse_args(argv)

    known = dict(VARIANTS)
    chosen = args.variants or [v for v, _ in VARIANTS]
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"Unknown --variants {unknown}; choose from: {list(known)}")
    setup = prepare(args, "ablation_")
    spec = edit_specs(setup.reference_image)[args.edit]
    originals = render_original_training_views(setup.config, args.render_chunk)
    original, train_cams, original_train, _ = originals

    results: List[EditResult] = []
    for k, label in enumerate(chosen):
        flags = known[label]
        variant_spec = type(spec)(spec.name, spec.flags + flags, spec.kind, spec.reference)
        r = EditResult(variant=label, edit=variant_spec, run_dir=setup.workdir / "edits" / f"{k:02d}")
        results.append(r)
        # a variant without out-of-domain guides is measured (and shown) at the other variants' out-of-domain views
        ood_cameras = next((q.renders.get("ood_cameras") for q in results if q.renders.get("ood_cameras") is not None),
                           None)
        edit_and_measure(r, setup.base + variant_spec.flags + shlex.split(args.network_args),
                         setup.workdir / "logs" / f"{k:02d}.log", setup.env, args.reuse, originals, args.render_chunk,
                         ood_cameras)

    device = device_name(args.threads)
    scene = original.datamanager.config.data
    lines, notes = table_rows(results)
    header = (f"Ablations on {scene} at {int(train_cams.width[0])} px ({device}); edit: {args.edit} "
              f"({spec.reference.name if spec.reference else ''}); run {setup.config}; settings: {args.settings}")
    text = "\n".join([header, "", *lines, "", *notes])
    if any(r.reused for r in results):
        text += "\n\n(*) reused run (--reuse): the sum of its ns-edit steps' timings, not a fresh wall time."
    figure = save_figure(results, original_train, train_cams, args.figure or setup.workdir / "ablation.png")
    print("\n" + text)
    (setup.workdir / "ablation.md").write_text(text + "\n")
    (setup.workdir / "ablation.json").write_text(json.dumps(
        [{"variant": r.variant, "flags": r.edit.flags, "seconds": r.seconds, "error": r.error, "figures": r.figures,
          "run": str(r.run_dir)} for r in results], indent=1, default=str))
    print(f"\ntable: {setup.workdir / 'ablation.md'}; figure: {figure}")
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
