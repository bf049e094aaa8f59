"""Does an edit keep what it should and change what it should? Prints a Markdown table with PASS / FAIL per criterion.

Trains ``nerfeditor-tiny`` once on a capture (or takes ``--load-config``), trains (or reuses) the slim hidden mapper
the demo uses, then runs the real ``ns-edit`` CLI as a subprocess for each edit:

- ``null``        ``--direction pc:0:0`` (asks for no change at all);
- ``near-null``   ``--direction pc:0:0.01`` (0.01 standard deviations along the first component: a nonzero edit that
  no code path can skip, and whose true effect is far below the thresholds);
- ``reference``   ``--reference-image`` with the demo's reference (tests/data/faces256/11.jpg, darker skin);
- ``reference-2`` ``--reference-image benchmarks/data/reference_pale_547.png`` (faces256 #547: pale, pinkish skin
  and fair hair, i.e. a change of the opposite sign to the demo's reference).

All edits use the demo's settings (``nerfeditor_ns.demo.edit_argv``: 5 in-domain and 6 out-of-domain views,
150 projection, 60 adjustor and 150 NeRF-finetuning steps, mix layer 4). Each ``--edit-args="FLAGS"`` adds a
variant that reruns every edit with those extra ns-edit flags (e.g. ``--edit-args= --edit-args="--generator-finetune-
steps 0"`` for the full method beside an ablation); an edit whose ns-edit fails (e.g. a flag this version does not
know) is reported as ERROR with ns-edit's message, and the other rows go on.

Every comparison is between the EDITED run at alpha = 1 and the ORIGINAL run's render of the same camera (both at
their default appearance) at every training camera and at the out-of-domain cameras the edit used (read from the
edited run's ``guides/`` folder), in regions fixed independently of the edit's masks
(:mod:`nerfeditor_ns.eval.fidelity`: subject box x 0.30-0.70, y 0.25-0.70; outside ring 0.10 wide on the left,
right and bottom edges). Criteria:

- null and near-null edits: whole-image PSNR >= 35 dB at every view;
- reference edits: subject changed (mean |change| >= 0.03) in >= 90 % of the views; the subject moved towards the
  reference face's colour in >= 90 % of the views (the view's change of the subject box's mean colour, applied to the
  original subject's face colour, brings it closer to the reference face's; both face colours over
  :data:`ALIGNED_FACE_BOX` of an aligned crop: the reference image and the edit's ``frontal.png``, see
  :func:`nerfeditor_ns.eval.fidelity.towards_reference`); PSNR in the outside ring >= 33 dB at every view.

The in/out-of-domain spread (mean subject change out-of-domain / training views) and, when the edit recorded it
(``generator_finetune`` in edit.json or metrics.json), the generator's fidelity with and without finetuning are
printed as information. Usage (2-core CPU, 64 px: about 10 minutes for training and 4-6 minutes per edit)::

    OMP_NUM_THREADS=1 python benchmarks/edit_fidelity.py --workdir /tmp/fid
    OMP_NUM_THREADS=1 python benchmarks/edit_fidelity.py --data /path/to/face --downscale 4 --edits null reference
    python benchmarks/edit_fidelity.py --load-config RUN/config.yml --edit-args= \
        --edit-args="--generator-finetune-steps 0"

(``--edit-args=...`` with ``=``: a value that starts with ``--`` must be attached to the flag.)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "tests" / "data" / "face_small"
DEFAULT_GENERATOR = ROOT / "tests" / "data" / "face_gan32.pt"
SECOND_REFERENCE = ROOT / "benchmarks" / "data" / "reference_pale_547.png"

NULL_PSNR_MIN = 35.0
OUTSIDE_PSNR_MIN = 33.0
CHANGED_FRACTION_MIN = 0.90
TOWARDS_FRACTION_MIN = 0.90


@dataclass
class EditSpec:
    """One edit of the benchmark."""

    name: str
    flags: List[str]
    kind: str  # "null" or "reference"
    reference: Optional[Path] = None


@dataclass
class EditResult:
    """Figures of one (variant, edit)."""

    variant: str
    edit: EditSpec
    seconds: float = float("nan")
    error: Optional[str] = None
    figures: Dict[str, Any] = field(default_factory=dict)
    checks: List[Tuple[str, str, str, Optional[bool]]] = field(default_factory=list)  # ..., passed (None: info)
    generator_finetune: Optional[Dict[str, Any]] = None
    run_dir: Optional[Path] = None
    reused: bool = False  # measured from an earlier run (--reuse): seconds = the sum of its steps' timings
    renders: Dict[str, Any] = field(default_factory=dict)
    """The edited run's alpha-1 renders ("train", and "ood" with its "ood_cameras") kept by :func:`measure`."""


def edit_specs(demo_reference: Path) -> Dict[str, EditSpec]:
    return {
        "null": EditSpec("null", ["--direction", "pc:0:0"], "null"),
        "near-null": EditSpec("near-null", ["--direction", "pc:0:0.01"], "null"),
        "reference": EditSpec("reference", ["--reference-image", str(demo_reference)], "reference", demo_reference),
        "reference-2": EditSpec("reference-2", ["--reference-image", str(SECOND_REFERENCE)], "reference",
                                SECOND_REFERENCE),
    }


# ------------------------------------------------------------------------------------------------ data and runs
def downscaled_copy(data: Path, factor: int, dest: Path) -> Path:
    """A copy of a nerfstudio scene with images and intrinsics scaled by 1/factor (the capture is left untouched)."""
    from PIL import Image

    meta = json.loads((data / "transforms.json").read_text())
    if (dest / "transforms.json").is_file():
        return dest

    def scale(d: Dict[str, Any]) -> None:
        for key in ("fl_x", "fl_y", "cx", "cy"):
            if key in d:
                d[key] = float(d[key]) / factor
        for key in ("w", "h"):
            if key in d:
                d[key] = int(round(int(d[key]) / factor))

    scale(meta)
    for frame in meta["frames"]:
        scale(frame)
        src = data / frame["file_path"]
        out = dest / frame["file_path"]
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.resize((round(im.width / factor), round(im.height / factor)), Image.Resampling.LANCZOS).save(out)
    meta.pop("ply_file_path", None)
    (dest / "transforms.json").write_text(json.dumps(meta, indent=1))
    return dest


def train_run(workdir: Path, data: Path, steps: int, seed: int, experiment: str = "fidelity",
              device_type: Optional[str] = None) -> Path:
    """nerfeditor-tiny through nerfstudio's Trainer (as the demo does) into ``<workdir>/runs/<experiment>``; returns
    its config.yml (``device_type``: e.g. "cpu"; default: the preset's)."""
    from nerfstudio.scripts.train import _set_random_seed

    from nerfeditor_ns.nerf.ns_compat import close_event_writers
    from nerfeditor_ns.method_configs import nerfeditor_tiny

    cfg = copy.deepcopy(nerfeditor_tiny.config)
    cfg.data = cfg.pipeline.datamanager.data = data.absolute()
    cfg.output_dir = (workdir / "runs").absolute()
    cfg.experiment_name, cfg.timestamp = experiment, "original"
    cfg.max_num_iterations, cfg.machine.seed = steps, seed
    if device_type is not None:
        cfg.machine.device_type = device_type  # type: ignore[assignment]
    cfg.vis = "tensorboard"
    cfg.logging.local_writer.enable = False
    cfg.save_config()
    _set_random_seed(seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    close_event_writers()
    return cfg.get_base_dir() / "config.yml"


def ns_edit_command() -> List[str]:
    """The installed ns-edit console script beside this Python (else the same entry point through -c)."""
    script = Path(sys.executable).parent / "ns-edit"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from nerfeditor_ns.edit.cli import entrypoint; entrypoint()"]


def run_ns_edit(argv: List[str], log: Path, env: Dict[str, str]) -> Tuple[int, float, str]:
    """Run ns-edit as a subprocess; returns (exit status, wall seconds, the tail of its output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log, "w") as fh:
        status = subprocess.call(ns_edit_command() + argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - started
    text = log.read_text(errors="replace").translate({ord(c): " " for c in "│╭╮╰╯─━"})
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return status, seconds, " ".join(" ".join(lines[-4:]).split())[:400]


def hidden_mapper(generator: Path, cache: Path, steps: int, batch: int, env: Dict[str, str], workdir: Path) -> Path:
    """The demo's slim hidden mapper (cached by ns-edit under ``cache``)."""
    from nerfeditor_ns.edit.mapper_cache import mapper_cache_dir, mapper_config
    from nerfeditor_ns.gan.hidden_mapper import hidden_mapper_cache_path

    settings = mapper_config(None, steps, slim=True, seed=0, batch=batch)
    path = hidden_mapper_cache_path(generator, mapper_cache_dir(cache), settings)
    if not path.is_file():
        argv = ["train-mapper", "--generator", str(generator), "--slim", "--steps", str(steps), "--batch", str(batch),
                "--seed", "0", "--cache-dir", str(cache), "--device", "cpu"]
        status, _, tail = run_ns_edit(argv, workdir / "logs" / "train-mapper.log", env)
        if status != 0 or not path.is_file():
            raise SystemExit(f"ns-edit train-mapper failed (exit status {status}): {tail}")
    return path


def load_run(config: Path, chunk: int):
    from nerfeditor_ns.edit.context import load_run as load_nerfeditor_run

    return load_nerfeditor_run(config, chunk)[1]


def read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------ measuring
def segment(images):
    """(background, subject) pixels of ORIGINAL renders from a person segmentation (nerfeditor_ns.mediapipe_models):
    the background keeps a margin from the person; the subject is the person's pixels inside the subject box. None
    without mediapipe (the ``faces`` extra): the criteria then fall back to the fixed ring and box."""
    from nerfeditor_ns import mediapipe_models
    from nerfeditor_ns.eval import fidelity as fid

    if not mediapipe_models.available():
        return None
    person = mediapipe_models.person_masks(images)
    box, _ = fid.DEFAULT_REGIONS.masks(images.shape[1], images.shape[2])
    return fid.background_from_person(person), (person > 0.5) & box[None]


def measure(result: EditResult, original, original_train, train_cams, chunk: int, segments_train=None,
            ood_cameras=None) -> None:
    """Render the edited run, compute the figures and the PASS / FAIL checks of one edit. The out-of-domain views are
    the edit's own (its ``guides/`` folder), else ``ood_cameras`` when given (an edit without out-of-domain guides,
    measured at another edit's out-of-domain cameras)."""
    import torch

    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.eval import fidelity as fid
    from nerfeditor_ns.eval.metrics import psnr
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets

    run = result.run_dir
    edited = load_run(run / "config.yml", chunk)
    edited_train = render_views(edited, train_cams, alpha=1.0, chunk=chunk, progress=False)["rgb"]
    sets, _ = load_guide_sets(run / "guides")
    ood = [s for s in sets if s.name == "out_of_domain"]
    cams = ood[0].cameras if ood else ood_cameras
    if cams is not None:
        edited_ood = render_views(edited, cams, alpha=1.0, chunk=chunk, progress=False)["rgb"]
        original_ood = render_views(original, cams, alpha=0.0, chunk=chunk, progress=False)["rgb"]
    else:
        cams = edited_ood = original_ood = None
    del edited
    result.renders = {"train": edited_train, "ood": edited_ood, "ood_original": original_ood, "ood_cameras": cams}

    groups = [("train", edited_train, original_train)]
    segments = {"train": segments_train}
    if edited_ood is not None:
        groups.append(("ood", edited_ood, original_ood))
        segments["ood"] = segment(original_ood) if segments_train is not None else None
    figs: Dict[str, Any] = {"num_views": {g: int(e.shape[0]) for g, e, _ in groups}}
    whole = {g: torch.tensor([psnr(e[i : i + 1], o[i : i + 1]) for i in range(e.shape[0])]) for g, e, o in groups}
    ring = {g: fid.kept_psnr_outside(e, o) for g, e, o in groups}
    change = {g: fid.subject_change(e, o) for g, e, o in groups}
    all_whole, all_ring, all_change = (torch.cat(list(d.values())) for d in (whole, ring, change))
    # the background: pixels away from the person segmented on the original render (None without mediapipe)
    back = {g: fid.kept_psnr_where(e, o, segments[g][0]) for g, e, o in groups if segments.get(g) is not None}
    all_back = torch.cat(list(back.values())) if back else None
    # the subject's change: over the person's pixels inside the box where segmented (wall in the box excluded)
    person_change = {g: fid.change_where(e, o, segments[g][1]) for g, e, o in groups if segments.get(g) is not None}
    all_person_change = torch.cat(list(person_change.values())) if person_change else None
    for g in whole:
        figs[f"psnr_whole_min_{g}"], figs[f"psnr_whole_mean_{g}"] = float(whole[g].min()), float(whole[g].mean())
        figs[f"psnr_outside_min_{g}"], figs[f"psnr_outside_mean_{g}"] = float(ring[g].min()), float(ring[g].mean())
        figs[f"change_mean_{g}"] = float(change[g].mean())
        if g in back:
            finite = back[g][torch.isfinite(back[g])]
            figs[f"psnr_background_min_{g}"] = float(finite.min()) if finite.numel() else None
    figs["fraction_changed"] = fid.fraction_changed(all_change)
    figs["spread"] = fid.domain_spread(change["train"], change.get("ood"))
    if all_person_change is not None:
        figs["fraction_changed_person"] = fid.fraction_changed(torch.nan_to_num(all_person_change, nan=0.0))
    figs["per_view"] = {g: {"psnr_whole": whole[g].tolist(), "psnr_outside": ring[g].tolist(),
                            "psnr_background": back[g].tolist() if g in back else None,
                            "person_change": person_change[g].tolist() if g in person_change else None,
                            "subject_change": change[g].tolist()} for g in whole}

    n_views = int(all_whole.numel())
    if result.edit.kind == "null":
        # a (near-)null edit must do the whole job: every step timed afresh and the NeRF finetuned for its steps
        record = read_json(run / "edit.json")
        timed = record.get("timings_s", {}) if isinstance(record.get("timings_s"), dict) else {}
        ran = [k for k, v in timed.items() if isinstance(v, (int, float))]
        ft_steps = (record.get("finetune") or {}).get("steps", 0) if isinstance(record.get("finetune"), dict) else 0
        figs["steps_timed"], figs["finetune_steps"] = ran, ft_steps
        result.checks.append(("no step short-cut (all steps ran, NeRF finetuned)",
                              f"{len(ran)} steps timed, {ft_steps} finetune steps", "all steps, >= 1",
                              len(ran) == len(timed) > 0 and int(ft_steps) >= 1))
        worst = float(all_whole.min())
        result.checks.append((f"whole-image PSNR, every view ({n_views})", f"min {worst:.2f} dB",
                              f">= {NULL_PSNR_MIN:.0f} dB", worst >= NULL_PSNR_MIN))
    else:
        import numpy as np
        from PIL import Image

        with Image.open(result.edit.reference) as im:
            ref = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
        ref_colour = fid.reference_face_colour(ref)
        # the original subject's face colour, measured like the reference's: on the original's frontal crop
        with Image.open(run / "frontal.png") as im:
            face_colour = fid.reference_face_colour(
                torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0))
        towards = [fid.towards_reference(e, o, ref_colour, face_colour) for _, e, o in groups]
        closer = [c for t in towards for c in t["closer"]]
        frac_closer = sum(closer) / len(closer)
        before = towards[0]["distance_before"]
        after = sum(sum(t["distance_after"]) for t in towards) / len(closer)
        figs["towards_reference"] = {"fraction_closer": frac_closer, "distance_before": before,
                                     "mean_distance_after": after, "reference_colour": ref_colour.tolist(),
                                     "subject_face_colour": face_colour.tolist()}
        frac = figs["fraction_changed"]
        if all_person_change is not None:
            frac_p = figs["fraction_changed_person"]
            result.checks.append((f"subject (person in the box) changed (>= {fid.CHANGE_THRESHOLD}) in views "
                                  f"({n_views})", f"{100 * frac_p:.0f} % (mean {float(all_person_change.nanmean()):.3f})",
                                  f">= {100 * CHANGED_FRACTION_MIN:.0f} %", frac_p >= CHANGED_FRACTION_MIN))
        result.checks.append((f"subject box changed (>= {fid.CHANGE_THRESHOLD}) in views ({n_views})",
                              f"{100 * frac:.0f} % (mean {float(all_change.mean()):.3f})",
                              f">= {100 * CHANGED_FRACTION_MIN:.0f} %",
                              None if all_person_change is not None else frac >= CHANGED_FRACTION_MIN))
        result.checks.append(("towards the reference (views closer)",
                              f"{100 * frac_closer:.0f} % (dist {before:.3f} -> {after:.3f})",
                              f">= {100 * TOWARDS_FRACTION_MIN:.0f} %", frac_closer >= TOWARDS_FRACTION_MIN))
        if all_back is not None:
            finite = all_back[torch.isfinite(all_back)]
            worst = float(finite.min()) if finite.numel() else float("nan")
            result.checks.append((f"background PSNR (person segmented), every view with background "
                                  f"({int(finite.numel())} of {n_views})", f"min {worst:.2f} dB",
                                  f">= {OUTSIDE_PSNR_MIN:.0f} dB", finite.numel() == 0 or worst >= OUTSIDE_PSNR_MIN))
        worst = float(all_ring.min())
        # with the segmentation the fixed ring is information only: in close-ups it holds the chin and neck
        result.checks.append((f"outside-ring PSNR, every view ({n_views})", f"min {worst:.2f} dB",
                              f">= {OUTSIDE_PSNR_MIN:.0f} dB",
                              None if all_back is not None else worst >= OUTSIDE_PSNR_MIN))
    result.figures = figs
    # generator fidelity with / without finetuning, where the edit recorded it (read defensively)
    for source in (read_json(run / "edit.json"), read_json(run / "metrics.json")):
        gf = source.get("generator_finetune") if isinstance(source, dict) else None
        if isinstance(gf, dict):
            result.generator_finetune = gf
            break


def _flat_numbers(d: Dict[str, Any], prefix: str = "") -> List[Tuple[str, float]]:
    out: List[Tuple[str, float]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out.append((name, float(value)))
        elif isinstance(value, dict):
            out.extend(_flat_numbers(value, name + "."))
    return out


# ------------------------------------------------------------------------------------------------ report
def print_report(results: List[EditResult], header: str) -> None:
    print(f"\n{header}\n")
    print("| variant | edit | criterion | value | threshold | result |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if r.error is not None:
            print(f"| {r.variant} | {r.edit.name} | ns-edit | {r.error.replace('|', '/')} | exit 0 | ERROR |")
            continue
        for crit, value, threshold, passed in r.checks:
            verdict = "info" if passed is None else ("PASS" if passed else "FAIL")
            print(f"| {r.variant} | {r.edit.name} | {crit} | {value} | {threshold} | {verdict} |")
    print("\n| variant | edit | wall s | PSNR whole min / mean (train) | PSNR whole min / mean (OOD) | "
          "background / ring PSNR min (train / OOD) | subject change mean (train / OOD) | views changed | OOD / train change |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.error is not None:
            continue
        f = r.figures

        def g(key: str, fmt: str = "{:.2f}") -> str:
            v = f.get(key)
            return "n/a" if v is None else fmt.format(v)

        ratio = f["spread"]["ratio_out_to_in"]
        seconds = f"{r.seconds:.0f}{'*' if r.reused else ''}"
        print(f"| {r.variant} | {r.edit.name} | {seconds} | {g('psnr_whole_min_train')} / "
              f"{g('psnr_whole_mean_train')} | {g('psnr_whole_min_ood')} / {g('psnr_whole_mean_ood')} | "
              f"{g('psnr_background_min_train')} / {g('psnr_background_min_ood')}; {g('psnr_outside_min_train')} / "
              f"{g('psnr_outside_min_ood')} | {g('change_mean_train', '{:.3f}')} / "
              f"{g('change_mean_ood', '{:.3f}')} | {100 * f['fraction_changed']:.0f} % | "
              f"{'n/a' if ratio is None else f'{ratio:.2f}'} |")
    if any(r.reused for r in results):
        print("\n(*) reused run (--reuse): the sum of its ns-edit steps' timings, not a fresh wall time.")
    gens = [r for r in results if r.error is None]
    print("\nGenerator fidelity (the generator at the adjusted codes against the in-domain render crops):")
    for r in gens:
        if r.generator_finetune is None:
            print(f"- {r.variant} / {r.edit.name}: not recorded by this ns-edit (no 'generator_finetune' in "
                  "edit.json / metrics.json)")
        else:
            numbers = ", ".join(f"{k} {v:.4g}" for k, v in _flat_numbers(r.generator_finetune)[:12])
            print(f"- {r.variant} / {r.edit.name}: {numbers or json.dumps(r.generator_finetune)[:300]}")


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say which run, networks and edit settings a benchmark of edits uses (shared with
    ``benchmarks/ablation_table.py``)."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="nerfstudio scene (default: the 64 px face)")
    parser.add_argument("--downscale", type=int, default=1,
                        help="train on a copy of --data scaled by 1/N (e.g. 4: the 512 px capture at 128 px)")
    parser.add_argument("--load-config", type=Path, default=None, help="existing nerfeditor run (default: train one)")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    parser.add_argument("--hidden-mapper", type=Path, default=None, help="default: the demo's slim mapper (cached)")
    parser.add_argument("--mapper-steps", type=int, default=300)
    parser.add_argument("--mapper-batch", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=None, help="hidden-mapper cache (default <workdir>/cache)")
    parser.add_argument("--reference-image", type=Path, default=None, help="default: the demo's reference")
    parser.add_argument("--settings", choices=["demo", "ns-edit"], default="demo",
                        help="demo: the built-in demo's CPU-size edit settings; ns-edit: ns-edit's own defaults (the "
                             "paper's sizes, for real networks on a GPU)")
    parser.add_argument("--reuse", action="store_true", help="measure finished edit runs in --workdir again")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads here and in ns-edit")
    parser.add_argument("--render-chunk", type=int, default=4096)


@dataclass
class Setup:
    """What every edit of a benchmark shares: the trained run, the hidden mapper and the ns-edit base command."""

    workdir: Path
    env: Dict[str, str]
    config: Path
    base: List[str]
    """ns-edit flags without the edit itself (no --reference-image) and without --output-dir."""
    reference_image: Path
    data: Path
    timings: Dict[str, float]


def prepare(args: argparse.Namespace, prefix: str) -> Setup:
    """Train (or take ``--load-config``) the run and the hidden mapper; the ns-edit base command."""
    import torch

    from nerfeditor_ns.demo import DemoConfig, edit_argv

    torch.set_num_threads(max(1, args.threads))
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.threads)))
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix=prefix))).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    demo = DemoConfig(data=args.data, mapper_steps=args.mapper_steps, mapper_batch=args.mapper_batch,
                      generator=args.generator.absolute(), seed=args.seed)
    if args.reference_image is not None:
        demo.reference_image = args.reference_image
    demo.reference_image = demo.reference_image.absolute()
    for path, flag in ((args.generator, "--generator"), (demo.reference_image, "--reference-image")):
        if not path.is_file():
            raise SystemExit(f"{flag} {path} does not exist.")

    timings: Dict[str, float] = {}
    config = args.load_config
    data = args.data.absolute()
    if config is None:
        if not (data / "transforms.json").is_file():
            raise SystemExit(f"No nerfstudio scene at {data} (transforms.json missing); pass --data.")
        if args.downscale > 1:
            data = downscaled_copy(data, args.downscale, workdir / f"data_x{args.downscale}")
        config = workdir / "runs" / "fidelity" / "nerfeditor-tiny" / "original" / "config.yml"
        if not (args.reuse and config.is_file()):
            started = time.time()
            config = train_run(workdir, data, args.train_steps, args.seed)
            timings["train"] = time.time() - started
    elif not config.is_file():
        raise SystemExit(f"--load-config {config} does not exist.")
    config = config.absolute()
    cache = (args.cache_dir or workdir / "cache").absolute()
    mapper = args.hidden_mapper or hidden_mapper(demo.generator, cache, args.mapper_steps, args.mapper_batch, env,
                                                 workdir)
    device = "cpu" if not torch.cuda.is_available() else "auto"
    if args.settings == "demo":
        base = edit_argv(demo, config, mapper.absolute(), cache, device)
        i = base.index("--reference-image")  # the edit itself comes from each benchmark's own list
        del base[i : i + 2]
    else:
        base = ["--load-config", str(config), "--generator", str(demo.generator), "--hidden-mapper",
                str(mapper.absolute()), "--cache-dir", str(cache), "--device", device, "--seed", str(args.seed)]
    return Setup(workdir=workdir, env=env, config=config, base=base, reference_image=demo.reference_image,
                 data=data, timings=timings)


def run_or_reuse(result: EditResult, argv_edit: List[str], log: Path, env: Dict[str, str], reuse: bool) -> bool:
    """Run ns-edit into ``result.run_dir`` (or, with ``reuse``, take a finished one); False when it failed."""
    if reuse and (result.run_dir / "edit.json").is_file():
        steps_s = read_json(result.run_dir / "edit.json").get("timings_s", {})  # the steps' own timings
        result.seconds = float(sum(v for v in steps_s.values() if isinstance(v, (int, float)))) or float("nan")
        result.reused = True
        return True
    argv_edit = argv_edit + ["--output-dir", str(result.run_dir), "--overwrite"]
    print(f"ns-edit {' '.join(shlex.quote(a) for a in argv_edit)}", flush=True)
    status, result.seconds, tail = run_ns_edit(argv_edit, log, env)
    if status != 0:
        result.error = f"exit status {status}: {tail}"
        print(f"  -> {result.error}", flush=True)
        return False
    print(f"  -> done in {result.seconds:.0f} s", flush=True)
    return True


def edit_and_measure(result: EditResult, argv_edit: List[str], log: Path, env: Dict[str, str], reuse: bool,
                     originals: Tuple[Any, Any, Any, Any], chunk: int, ood_cameras=None) -> None:
    """Run (or reuse) one ns-edit and measure it against ``originals`` (:func:`render_original_training_views`);
    a failure is recorded in ``result.error`` and the other rows go on."""
    if not run_or_reuse(result, argv_edit, log, env, reuse):
        return
    original, train_cams, original_train, segments_train = originals
    try:
        measure(result, original, original_train, train_cams, chunk, segments_train, ood_cameras)
    except Exception as err:  # a damaged run must not hide the other rows
        result.error = f"measuring failed: {type(err).__name__}: {err}"


def device_name(threads: int) -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {threads} thread(s)"


def render_original_training_views(config: Path, chunk: int):
    """(original pipeline, its training cameras, their alpha-0 renders, their segmentation or None)."""
    from nerfeditor_ns.edit.render import render_views

    original = load_run(config, chunk)
    train_cams = original.datamanager.train_dataset.cameras
    original_train = render_views(original, train_cams, alpha=0.0, chunk=chunk, progress=False)["rgb"]
    segments_train = segment(original_train)
    if segments_train is None:
        print("note: mediapipe is not installed (pip install \"nerfeditor-ns[faces]\"): the subject and outside "
              "criteria use the fixed box and ring only.", flush=True)
    return original, train_cams, original_train, segments_train


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser)
    parser.add_argument("--edits", nargs="+", default=["null", "near-null", "reference", "reference-2"],
                        choices=["null", "near-null", "reference", "reference-2"])
    parser.add_argument("--edit-args", action="append", default=None,
                        help="extra ns-edit flags as one string; repeat for variants (default: one variant, none)")
    args = parser.parse_args(argv)

    setup = prepare(args, "edit_fidelity_")
    workdir, env, config, timings = setup.workdir, setup.env, setup.config, setup.timings
    specs = edit_specs(setup.reference_image)
    variants = args.edit_args if args.edit_args else [""]
    originals = render_original_training_views(config, args.render_chunk)
    original, train_cams, original_train, segments_train = originals

    results: List[EditResult] = []
    for v, extra in enumerate(variants):
        label = extra.strip() or "default"
        for name in args.edits:
            spec = specs[name]
            r = EditResult(variant=label, edit=spec, run_dir=workdir / "edits" / f"v{v}-{name}")
            results.append(r)
            edit_and_measure(r, setup.base + spec.flags + shlex.split(extra), workdir / "logs" / f"v{v}-{name}.log",
                             env, args.reuse, originals, args.render_chunk)

    device = device_name(args.threads)
    size = f"{int(train_cams.width[0])} px"
    from nerfeditor_ns.eval.fidelity import DEFAULT_REGIONS as R

    x0, y0, x1, y1 = R.subject
    scene = original.datamanager.config.data if args.load_config is not None else setup.data
    header = (f"Edit fidelity on {scene} at {size} ({device}); run {config}; generator {args.generator.name}; "
              f"regions: subject box x {x0:.2f}-{x1:.2f} y {y0:.2f}-{y1:.2f}, outside ring {R.ring:.2f} "
              f"({'all edges' if R.ring_top else 'left, right, bottom'})")
    if segments_train is not None:
        from nerfeditor_ns.eval.fidelity import BACKGROUND_MARGIN

        header += (f"; background: pixels farther than {BACKGROUND_MARGIN:.2f} of the image side from the person "
                   "(MediaPipe selfie segmentation of the original renders); subject: the person's pixels in the box")
    if "train" in timings:
        header += f"; training {args.train_steps} steps took {timings['train']:.0f} s"
    print_report(results, header)
    (workdir / "fidelity.json").write_text(json.dumps(
        [{"variant": r.variant, "edit": r.edit.name, "seconds": r.seconds, "error": r.error, "figures": r.figures,
          "checks": [list(c) for c in r.checks], "generator_finetune": r.generator_finetune} for r in results],
        indent=1, default=str))
    print(f"\nfigures per view: {workdir / 'fidelity.json'}")
    return 0 if all(r.error is None and all(c[3] is not False for c in r.checks) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
