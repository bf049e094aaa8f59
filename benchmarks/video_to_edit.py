"""From a phone video to an edited scene: ``ns-process-data video`` -> ``ns-train`` -> ``ns-eval`` -> ``ns-edit``.

The user's whole journey with nerfstudio's own tools and this plugin's, each run as the console script a user would
type (subprocesses, so every stage is exactly the command printed), timed, with its figures collected:

1. (optional) ``--frames DIR``: make the input video from a folder of frames with ffmpeg (a test video; e.g. the face
   capture's 65 frames at 5 fps);
2. ``ns-process-data video``: ffmpeg frame extraction + COLMAP, set up to work offline and on a CPU (sequential or
   exhaustive matching, never the vocab tree, which nerfstudio downloads; ``--no-gpu`` SIFT unless ``--gpu``; COLMAP
   called through ``benchmarks/colmap_threads.sh``, which bounds its threads and renames the options COLMAP 3.13
   renamed). Reports COLMAP's registered frames / extracted frames and
   how many separate models it made (nerfstudio keeps only ``sparse/0``);
3. ``ns-train nerfeditor`` (``nerfeditor-tiny`` on a machine without CUDA) on the processed capture at about
   ``--image-size`` px (``nerfstudio-data --downscale-factor``, from the images_N folders ns-process-data wrote);
4. ``ns-eval``: the trained scene's PSNR / SSIM on nerfstudio's eval split;
5. ``ns-edit`` on the trained run (``--direction pc:0:-2`` by default, or ``--reference-image``), with small settings
   that fit a CPU (the demo's), then its ``edit.json`` / ``metrics.json``.

Prints a summary and writes it to ``<output-dir>/summary.json``. Usage (2-core CPU, no GPU; ~25-30 min)::

    OMP_NUM_THREADS=1 benchmarks/video_to_edit.sh --frames /path/to/face/images --fps 5 --output-dir /tmp/v2e
    benchmarks/video_to_edit.sh my_phone_video.mp4 --output-dir /tmp/v2e --image-size 256 --steps 5000
    benchmarks/video_to_edit.sh my.mp4 --output-dir /tmp/v2e --matching-method exhaustive   # when COLMAP registers few

Re-running with the same ``--output-dir`` reuses a finished stage (processed capture, trained run) unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GENERATOR = ROOT / "tests" / "data" / "face_gan32.pt"
COLMAP_WRAPPER = ROOT / "benchmarks" / "colmap_threads.sh"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

#: ns-edit settings small enough for a CPU (the demo's: nerfeditor_ns.demo.DemoConfig)
SMALL_EDIT_ARGS = [
    "--num-in-yaw", "5", "--num-in-pitch", "1", "--num-out-domain", "6", "--projection-steps", "150",
    "--adjustor-steps", "60", "--adjustor-batch", "4", "--num-components", "8", "--video-frames", "16",
]

COLMAP_HELP = (
    "What to try when COLMAP registers too few frames: --matching-method exhaustive (matches every pair, not only "
    "neighbouring frames; slower); more frames (--num-frames-target, or a slower sweep in the video); "
    "--no-refine-intrinsics if the final bundle adjustment fails; re-shoot with the subject textured and well lit, "
    "no motion blur, moving around it (not turning on the spot)."
)


class PipelineError(RuntimeError):
    """A stage failed or its input is unusable; the message names the problem and the fix."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", type=Path, help="Input video file (or give --frames to make one).")
    p.add_argument("--frames", type=Path, default=None,
                   help="Make the input video from this folder of frames (sorted by name) with ffmpeg first.")
    p.add_argument("--fps", type=float, default=5.0, help="Frame rate of the video made from --frames.")
    p.add_argument("--output-dir", type=Path, default=Path("video_to_edit_outputs"),
                   help="Where the video, processed capture (data/), runs (runs/), eval and edit go.")
    p.add_argument("--image-size", type=int, default=128,
                   help="Training image size (px, longer side): the nearest power-of-2 downscale of the frames.")
    p.add_argument("--steps", type=int, default=1000, help="NeRF training steps (ns-train --max-num-iterations).")
    p.add_argument("--method", default="auto", choices=["auto", "nerfeditor", "nerfeditor-tiny"],
                   help="ns-train method; auto: nerfeditor with CUDA, nerfeditor-tiny (the CPU preset) without.")
    p.add_argument("--direction", default="pc:0:-2", help="ns-edit --direction (ignored with --reference-image).")
    p.add_argument("--reference-image", type=Path, default=None, help="Edit with ns-edit --reference-image instead.")
    p.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR,
                   help="StyleGAN2 for ns-edit (default: the shipped 32 px face generator).")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="ns-edit --finetune-steps (default: 300; with --full-edit ns-edit's own, 1/4 of --steps).")
    p.add_argument("--full-edit", action="store_true",
                   help="Use ns-edit's default view counts and step counts instead of the small CPU settings.")
    p.add_argument("--edit-args", default="",
                   help='Extra ns-edit flags, one string (e.g. --edit-args="--force --mix-layer 3"); they come last.')
    p.add_argument("--matching-method", default="sequential", choices=["sequential", "exhaustive"],
                   help="COLMAP matching (vocab_tree is not offered: nerfstudio downloads its vocabulary).")
    p.add_argument("--refine-intrinsics", action=argparse.BooleanOptionalAction, default=True,
                   help="COLMAP bundle adjustment of the intrinsics after mapping (ns-process-data's default: on).")
    p.add_argument("--num-frames-target", type=int, default=300, help="Frames ns-process-data extracts (about).")
    p.add_argument("--gpu", action="store_true", help="GPU SIFT in COLMAP (needs a CUDA build of COLMAP).")
    p.add_argument("--colmap-threads", type=int, default=1, help="CPU threads of each COLMAP stage.")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of torch (OMP_NUM_THREADS) for train/eval/edit.")
    p.add_argument("--colmap", default="colmap", help="The COLMAP executable.")
    p.add_argument("--fresh", action="store_true", help="Redo every stage even if its result is in --output-dir.")
    args = p.parse_args(argv)
    check_args(args, p)
    return args


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse bad flags before any work, naming the flag and the fix."""
    if (args.video is None) == (args.frames is None):
        parser.error("give exactly one input: a VIDEO file, or --frames DIR to make a video from a folder of frames.")
    if args.video is not None and not args.video.is_file():
        parser.error(f"video {args.video} does not exist; pass the path of a video file (mp4, mov, ...).")
    if args.frames is not None:
        if not args.frames.is_dir():
            parser.error(f"--frames {args.frames} is not a folder; pass a folder of .jpg/.png frames.")
        if len(frame_files(args.frames)) < 2:
            parser.error(f"--frames {args.frames} holds fewer than 2 .jpg/.png frames.")
        if not args.fps > 0:
            parser.error(f"--fps must be positive (got {args.fps}).")
    for name in ("image_size", "steps", "num_frames_target", "colmap_threads", "threads", "finetune_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)}).")
    if args.reference_image is not None and not args.reference_image.is_file():
        parser.error(f"--reference-image {args.reference_image} does not exist; pass an image file.")
    if not args.generator.is_file():
        parser.error(f"--generator {args.generator} does not exist; pass a StyleGAN2 checkpoint (.pt / .pkl).")


def frame_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def require_tool(name: str, hint: str) -> str:
    """The path of an executable on PATH, or a PipelineError saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise PipelineError(f"`{name}` was not found on PATH. {hint}")
    return found


def ns_tool(name: str) -> str:
    """A nerfstudio / nerfeditor console script: beside this Python first (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return require_tool(name, "Install nerfstudio 1.1.5 and this package (pip install -e .) in this environment.")


def run(cmd: List[str], log: Path, env: Dict[str, str]) -> float:
    """Run one stage's command, tee its output into ``log``; returns wall seconds; raises on failure."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            sys.stdout.write(line)
        status = proc.wait()
    if status != 0:
        raise PipelineError(f"`{Path(cmd[0]).name}` failed (exit status {status}); its output is in {log}.")
    return time.time() - start


def make_video(frames: Path, fps: float, out: Path, env: Dict[str, str]) -> float:
    """ffmpeg: the frames of a folder (sorted by name) -> an H.264 video at ``fps``."""
    ffmpeg = require_tool("ffmpeg", "Install it (Debian/Ubuntu: apt-get install ffmpeg) or pass a video file instead.")
    files = frame_files(frames)
    suffix = max({p.suffix for p in files}, key=lambda x: sum(p.suffix == x for p in files))
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-pattern_type", "glob", "-i",
           str(frames.resolve() / f"*{suffix}"), "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-crf", "18", str(out)]
    return run(cmd, out.with_suffix(".ffmpeg.log"), env)


def video_size(video: Path) -> Tuple[int, int]:
    """(width, height) of the first video stream (ffprobe)."""
    ffprobe = require_tool("ffprobe", "It comes with ffmpeg (Debian/Ubuntu: apt-get install ffmpeg).")
    out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                          "-of", "csv=p=0", str(video)], capture_output=True, text=True)
    try:
        w, h = (int(v) for v in out.stdout.strip().split(",")[:2])
    except ValueError as err:
        raise PipelineError(f"ffprobe found no video stream in {video}: {out.stderr.strip()}") from err
    return w, h


def downscale_exponent(width: int, height: int, image_size: int) -> int:
    """k such that max(width, height) / 2**k is nearest to ``image_size`` (k >= 0)."""
    return max(0, round(math.log2(max(width, height) / image_size)))


def colmap_summary(data: Path) -> Dict[str, Any]:
    """Registered frames (in transforms.json) of the frames ns-process-data extracted, and COLMAP's model count."""
    total = len(frame_files(data / "images")) if (data / "images").is_dir() else 0
    sparse = data / "colmap" / "sparse"
    models = sorted(p.name for p in sparse.iterdir() if p.is_dir()) if sparse.is_dir() else []
    registered = 0
    if (data / "transforms.json").is_file():
        registered = len(json.loads((data / "transforms.json").read_text())["frames"])
    return {"registered": registered, "total": total, "models": len(models)}


def process_command(args, video: Path, data: Path, k: int) -> List[str]:
    """ns-process-data video, offline and (unless --gpu) on CPU, with images_2 .. images_{2**k}."""
    return [ns_tool("ns-process-data"), "video", "--data", str(video), "--output-dir", str(data),
            "--matching-method", args.matching_method, "--num-downscales", str(max(k, 1)),
            "--num-frames-target", str(args.num_frames_target), "--colmap-cmd", str(COLMAP_WRAPPER),
            "--gpu" if args.gpu else "--no-gpu",
            "--refine-intrinsics" if args.refine_intrinsics else "--no-refine-intrinsics", "--verbose"]


def process_video(args, video: Path, data: Path, k: int, env: Dict[str, str]) -> float:
    require_tool(args.colmap, "Install COLMAP (Debian/Ubuntu: apt-get install colmap) or pass --colmap PATH.")
    require_tool("ffmpeg", "Install it (Debian/Ubuntu: apt-get install ffmpeg).")
    env = dict(env, COLMAP_NUM_THREADS=str(args.colmap_threads), COLMAP_EXE=args.colmap)
    return run(process_command(args, video, data, k), data.parent / "process_data.log", env)


def train_command(args, method: str, data: Path, runs: Path, k: int) -> List[str]:
    """ns-train on the processed capture at 1 / 2**k of the video's size (the images_{2**k} folder)."""
    return [ns_tool("ns-train"), method, "--data", str(data), "--output-dir", str(runs), "--experiment-name", "video",
            "--timestamp", "run", "--max-num-iterations", str(args.steps), "--vis", "tensorboard",
            "--steps-per-save", str(args.steps), "nerfstudio-data", "--downscale-factor", str(2**k)]


def train(args, method: str, data: Path, runs: Path, k: int, env: Dict[str, str]) -> Tuple[float, Path]:
    seconds = run(train_command(args, method, data, runs, k), runs.parent / "train.log", env)
    return seconds, runs / "video" / method / "run" / "config.yml"


def evaluate(config: Path, out: Path, env: Dict[str, str]) -> Tuple[float, Dict[str, Any]]:
    seconds = run([ns_tool("ns-eval"), "--load-config", str(config), "--output-path", str(out)],
                  out.with_suffix(".log"), env)
    return seconds, json.loads(out.read_text())["results"]


def edit_command(args, config: Path, out: Path) -> List[str]:
    """ns-edit on the trained run: the small CPU settings unless --full-edit, then --edit-args."""
    how = ["--reference-image", str(args.reference_image)] if args.reference_image else ["--direction", args.direction]
    cmd = [ns_tool("ns-edit"), "--load-config", str(config), "--generator", str(args.generator), *how,
           "--output-dir", str(out), "--overwrite", "--cache-dir", str(out.parent / "cache")]
    if not args.full_edit:
        cmd += SMALL_EDIT_ARGS + ["--finetune-steps", str(args.finetune_steps or 300)]
    elif args.finetune_steps is not None:
        cmd += ["--finetune-steps", str(args.finetune_steps)]
    return cmd + shlex.split(args.edit_args)


def edit(args, config: Path, out: Path, env: Dict[str, str]) -> float:
    return run(edit_command(args, config, out), out.parent / "edit.log", env)


HEADLINE_METRICS = ("psnr_outside_mask", "psnr_inside_mask", "reconstruction_psnr", "reconstruction_psnr_before",
                    "aps", "pose_error", "fr_before", "fr_after", "id_frontal", "clip_direction_consistency")
"""metrics.json keys (nerfeditor-metrics/2) the summary prints when the edit computed them."""


def edit_figures(edit_dir: Path) -> Dict[str, Any]:
    """The headline figures of an edit's metrics.json (every metric it computed, with its in/out-of-domain split)
    and edit.json (the edit, per-step wall seconds, files)."""
    report = json.loads((edit_dir / "metrics.json").read_text())
    record = json.loads((edit_dir / "edit.json").read_text())
    metrics = {}
    for key, e in report.get("metrics", {}).items():
        if e.get("value") is not None:
            metrics[key] = {k: e[k] for k in ("value", "in_domain", "out_of_domain", "views") if k in e}
    fid = report.get("fidelity") or {}

    def view_block(name: str) -> Optional[Dict[str, Any]]:
        block = fid.get(name)
        if not block:
            return None
        return {"num_views": block["num_views"], "kept_psnr_outside_min": block["kept_psnr_outside"]["min"],
                "subject_change_mean": block["subject_change"]["mean"], "fraction_changed": block["fraction_changed"]}

    return {
        "edit": record.get("edit"),
        "metrics": metrics,
        "training_views": view_block("training_views"),
        "out_of_domain_views": view_block("out_of_domain_views"),
        "domain_check_passed": (report.get("domain_check") or {}).get("passed"),
        "step_seconds": record.get("timings_wall_s"),
        "files": {key: str(edit_dir / name) for key, name in record.get("files", {}).items()},
    }


def choose_method(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError as err:
        raise PipelineError(f"--method auto needs torch in this Python ({sys.executable}); run the script with the "
                            "nerfstudio environment's Python (PYTHON=/path/to/venv/bin/python for the .sh), or pass "
                            "--method nerfeditor / nerfeditor-tiny.") from err
    return "nerfeditor" if torch.cuda.is_available() else "nerfeditor-tiny"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = args.output_dir.absolute()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    summary: Dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "seconds": {}}
    seconds = summary["seconds"]
    try:
        video = args.video
        if args.frames is not None:
            video = out / "input.mp4"
            if args.fresh or not video.is_file():
                seconds["make_video"] = make_video(args.frames, args.fps, video, env)
            summary["video_frames_from"] = str(args.frames)
        width, height = video_size(video)
        k = downscale_exponent(width, height, args.image_size)
        summary["video_size"] = [width, height]
        summary["train_image_size"] = [math.ceil(width / 2**k), math.ceil(height / 2**k)]

        data = out / "data"
        if args.fresh or not (data / "transforms.json").is_file():
            if data.exists():
                shutil.rmtree(data)
            seconds["process_data"] = process_video(args, video, data, k, env)
        colmap = colmap_summary(data)
        summary["colmap"] = colmap
        print(f"COLMAP registered {colmap['registered']} / {colmap['total']} frames ({colmap['models']} model(s))")
        if colmap["registered"] == 0:
            raise PipelineError(f"COLMAP registered no frame of {video} (no {data / 'transforms.json'}). {COLMAP_HELP}")
        if colmap["registered"] < 0.5 * colmap["total"] or colmap["models"] > 1:
            print(f"warning: COLMAP registered only part of the video. {COLMAP_HELP}")

        method = choose_method(args.method)
        summary["method"] = method
        runs = out / "runs"
        config = runs / "video" / method / "run" / "config.yml"
        if args.fresh or not config.is_file() or not list((config.parent / "nerfstudio_models").glob("*.ckpt")):
            if config.parent.exists():
                shutil.rmtree(config.parent)
            seconds["train"], config = train(args, method, data, runs, k, env)
        summary["run_config"] = str(config)
        seconds["eval"], eval_results = evaluate(config, out / "eval.json", env)
        summary["eval"] = {key: eval_results.get(key) for key in ("psnr", "psnr_std", "ssim", "ssim_std")}

        edit_dir = out / "edit"
        seconds["edit"] = edit(args, config, edit_dir, env)
        summary["edit"] = edit_figures(edit_dir)
    except PipelineError as err:
        summary["error"] = str(err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print_summary(summary, out)
    return 0


def _num(value: Any, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def print_summary(summary: Dict[str, Any], out: Path) -> None:
    s = summary.get("seconds", {})
    lines = ["", "==== video -> edit summary ===="]
    if "colmap" in summary:
        c = summary["colmap"]
        lines.append(f"COLMAP: {c['registered']} / {c['total']} frames registered, {c['models']} model(s)")
    for stage in ("make_video", "process_data", "train", "eval", "edit"):
        if stage in s:
            lines.append(f"time {stage:13s} {s[stage]:8.1f} s")
    if "eval" in summary:
        e = summary["eval"]
        lines.append(f"eval ({summary.get('method')}, {summary.get('train_image_size')} px): "
                     f"PSNR {_num(e['psnr'])} dB, SSIM {_num(e['ssim'], '.3f')}")
    if "edit" in summary:
        e = summary["edit"]
        spec = e.get("edit") or {}
        lines.append(f"edit {spec.get('mode')} {spec.get('value')} (metrics.json):")
        for key in HEADLINE_METRICS:
            m = e["metrics"].get(key)
            if m is not None:
                split = "".join(f", {d.replace('_', '-')} {_num(m[d], '.3f')}" for d in ("in_domain", "out_of_domain")
                                if m.get(d) is not None)
                lines.append(f"  {key:28s} {_num(m['value'], '.3f')}{split}")
        for name in ("training_views", "out_of_domain_views"):
            b = e.get(name)
            if b:
                lines.append(f"  {name}: {b['num_views']} views, kept PSNR outside the subject min "
                             f"{b['kept_psnr_outside_min']:.2f} dB, subject change mean {b['subject_change_mean']:.3f}"
                             f" ({100 * b['fraction_changed']:.0f} % of views changed)")
        lines.append(f"  grid {e['files'].get('grid')}  video {e['files'].get('video')}")
    if "error" in summary:
        lines.append(f"FAILED: {summary['error']}")
    lines.append(f"summary: {out / 'summary.json'}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
