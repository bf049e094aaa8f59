"""Built-in demo: ``python -m nerfeditor_ns.demo``.

The whole NeRFEditor job, offline, on CPU, in a few minutes:

1. train the ``nerfeditor-tiny`` preset through nerfstudio's own Trainer on the small face scene shipped with the
   repository (``tests/data/face_small``: 65 frames, 64 px) and render a few held-out views with alpha = 0 (one PNG
   per view, ground truth | render, plus a contact sheet);
2. train a slim hidden mapper (paper Sec. 3.3, Alg. 1) for the shipped 32 px face StyleGAN2
   (``tests/data/face_gan32.pt``) with ``ns-edit train-mapper`` into a cache under the output folder (skipped when a
   finished one is cached there, so re-runs are faster);
3. run a real ``ns-edit`` on the trained run (the same entry point as the console script): a reference-image edit
   (style mixing, paper Sec. 4.5) with a shipped face photo whose skin and hair differ clearly from the captured
   person, through inversion, the latent code adjustor, guide sets and NeRF finetuning;
4. print where the before/after grid, the turntable video, metrics.json and the edited run's config.yml are, and
   the ``ns-viewer`` command that opens the edited run.

The networks are tiny and trained for a few hundred CPU steps, so the edit is a coarse colour / tone change, not the
paper's quality; real users pass real weights to ``ns-edit`` (see the README).
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from nerfeditor_ns.io_utils import to_uint8

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENE = REPO_ROOT / "tests" / "data" / "face_small"
DEFAULT_GENERATOR = REPO_ROOT / "tests" / "data" / "face_gan32.pt"
# a smiling woman with dark skin and black hair; the captured person has light skin and brown hair
DEFAULT_REFERENCE = REPO_ROOT / "tests" / "data" / "faces256" / "11.jpg"
EDIT_EXPERIMENT = "demo"


@dataclass
class DemoConfig:
    """Train nerfeditor-tiny on the bundled face scene, render held-out views, then edit the scene with ns-edit
    (reference-image style mixing through the bundled 32 px face StyleGAN2) and write before/after outputs."""

    data: Path = DEFAULT_SCENE
    """Scene in nerfstudio format (a folder with transforms.json); defaults to the bundled 64 px face."""
    output_dir: Path = Path("demo_outputs")
    """Where the PNGs, the contact sheet, the nerfstudio runs (runs/) and the hidden-mapper cache (cache/) go."""
    steps: int = 300
    """Training steps of the original NeRF."""
    num_views: int = 4
    """Held-out views to render (nerfstudio's eval split)."""
    seed: int = 42
    """Random seed of the run."""
    threads: int = 1
    """CPU threads for torch (tiny networks gain little from more; on a busy machine more can be many times slower)."""

    # ---- the edit (ns-edit) ----
    edit: bool = True
    """After training, edit the scene with ns-edit (--no-edit: train and render only)."""
    generator: Path = DEFAULT_GENERATOR
    """StyleGAN2 generator for the edit (rosinality .pt or NVIDIA .pkl); defaults to the bundled 32 px face GAN."""
    reference_image: Path = DEFAULT_REFERENCE
    """Reference face: its inverted code is style-mixed into the frontal code from --mix-layer on."""
    mix_layer: int = 4
    """First W+ row taken from the reference (8 rows at 32 px; 4 = its 16/32 px layers: colour, texture)."""
    finetune_steps: int = 300
    """NeRF finetuning steps on the guide sets (ns-edit's default would be 1/4 of --steps). At 150 a large colour
    change of dark hair (black to grey, person-2 with the paler reference) stayed speckled; 300 renders it smooth."""
    projection_steps: int = 150
    """Optimisation steps of the inversions (the frontal view and the reference image)."""
    adjustor_steps: int = 60
    """Training steps of the latent code adjustor (paper Eq. 1)."""
    num_in_yaw: int = 5
    """In-domain views along yaw (the adjustor's training poses and the in-domain guide set)."""
    num_out_domain: int = 6
    """Out-of-domain views, stylized through the hidden mapper."""
    mapper_steps: int = 300
    """Training steps of the slim hidden mapper (cached under <output-dir>/cache; the paper trains 20,000)."""
    mapper_batch: int = 4
    """Images per hidden-mapper step."""
    video_frames: int = 16
    """Frames of the before/after turntable video."""
    cache_dir: Optional[Path] = None
    """Cache root for the hidden mapper (default <output-dir>/cache)."""
    render_scale: float = 1.0
    """Scale of the edit's rendered views relative to the training images (0.5 = 32 px views, faster)."""


@dataclass
class DemoResult:
    """What the demo wrote."""

    output_dir: Path
    """The demo's output folder."""
    run_config: Path
    """config.yml of the trained (original) run."""
    view_paths: List[Path]
    """One PNG per held-out view (ground truth | render)."""
    contact_sheet: Path
    """All held-out views in one PNG."""
    mean_psnr: float
    """Mean held-out PSNR (dB) of the original run."""
    edit_run: Optional[Path] = None
    """Directory of the edited run (None with --no-edit)."""
    edit_files: Dict[str, Path] = field(default_factory=dict)
    """grid / video / metrics / config / frontal images of the edited run."""
    timings_s: Dict[str, float] = field(default_factory=dict)
    """Wall seconds of train / render / mapper / edit."""


def contact_sheet(pairs: List[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack side-by-side (ground truth | render) images vertically with a white gap between rows."""
    if not pairs:
        raise ValueError("contact_sheet needs at least one image.")
    width = max(p.shape[1] for p in pairs)
    rows = []
    for i, pair in enumerate(pairs):
        row = np.full((pair.shape[0], width, 3), 255, dtype=np.uint8)
        row[:, : pair.shape[1]] = pair
        rows.append(row)
        if i + 1 < len(pairs):
            rows.append(np.full((gap, width, 3), 255, dtype=np.uint8))
    return np.concatenate(rows, axis=0)


def check_config(cfg: DemoConfig) -> None:
    """Refuse bad flags before any work, naming the flag and the fix."""
    if not (cfg.data / "transforms.json").is_file():
        raise SystemExit(
            f"No nerfstudio scene at {cfg.data} (transforms.json missing). Pass --data <folder with transforms.json>, "
            "or run from a checkout of the repository, which ships tests/data/face_small."
        )
    for name in ("steps", "num_views", "finetune_steps", "projection_steps", "adjustor_steps", "num_in_yaw",
                 "mapper_steps", "mapper_batch", "video_frames"):
        if int(getattr(cfg, name)) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)}).")
    if cfg.num_out_domain < 0:
        raise SystemExit("--num-out-domain must be >= 0 (0 = no out-of-domain views).")
    if not cfg.render_scale > 0:
        raise SystemExit(f"--render-scale must be positive (got {cfg.render_scale}); e.g. 0.5 for half-size views.")
    if cfg.edit:
        if not cfg.generator.is_file():
            raise SystemExit(
                f"--generator {cfg.generator} does not exist. Pass a StyleGAN2 checkpoint (.pt / .pkl), run from a "
                "checkout of the repository (it ships tests/data/face_gan32.pt), or use --no-edit."
            )
        if not cfg.reference_image.is_file():
            raise SystemExit(
                f"--reference-image {cfg.reference_image} does not exist. Pass an image file (e.g. one of "
                "tests/data/faces256/*.jpg), or use --no-edit."
            )


def train_original(cfg: DemoConfig, console):
    """Train nerfeditor-tiny on ``cfg.data`` through nerfstudio's Trainer; returns (trainer, config path)."""
    from nerfstudio.scripts.train import _set_random_seed

    from nerfeditor_ns.method_configs import nerfeditor_tiny

    config = copy.deepcopy(nerfeditor_tiny.config)
    config.pipeline.datamanager.data = cfg.data.absolute()
    config.output_dir = (cfg.output_dir / "runs").absolute()  # absolute: config.yml works from any directory
    config.experiment_name = EDIT_EXPERIMENT
    config.max_num_iterations = cfg.steps
    config.machine.seed = cfg.seed
    config.vis = "tensorboard"
    config.logging.steps_per_log = max(1, cfg.steps // 10)
    config.set_timestamp()
    config.save_config()
    console.rule(f"[bold]nerfeditor-tiny on {cfg.data} for {cfg.steps} steps")
    _set_random_seed(cfg.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    from nerfeditor_ns.nerf.ns_compat import close_event_writers

    close_event_writers()  # the edit's finetuning (same process) must not append to this run's logs
    return trainer, config.get_base_dir() / "config.yml"


def render_held_out(cfg: DemoConfig, pipeline, console):
    """Held-out (eval split) renders at alpha = 0: one PNG per view and a contact sheet; returns (paths, sheet, psnrs)."""
    import torch
    from PIL import Image

    model = pipeline.model
    model.eval()
    model.viewer_alpha = 0.0  # the original scene
    dataset = pipeline.datamanager.eval_dataset
    count = min(cfg.num_views, len(dataset))
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    cameras = dataset.cameras.to(model.device)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    pairs: List[np.ndarray] = []
    paths: List[Path] = []
    psnrs: List[float] = []
    console.rule("[bold]rendering held-out views (alpha = 0)")
    for n, index in enumerate(indices):
        with torch.no_grad():
            outputs = model.get_outputs_for_camera(cameras[index : index + 1])
        render = outputs["rgb"]
        gt = dataset.get_image_float32(index).to(render.device)[..., :3]
        psnr = float(-10.0 * torch.log10(torch.mean((render - gt) ** 2)))
        psnrs.append(psnr)
        pair = np.concatenate([to_uint8(gt), to_uint8(render)], axis=1)
        pairs.append(pair)
        path = cfg.output_dir / f"view_{n:02d}.png"
        Image.fromarray(pair).save(path)
        paths.append(path)
        console.print(f"  view {index:3d} (eval split): PSNR {psnr:5.2f} dB -> {path}")
    sheet_path = cfg.output_dir / "contact_sheet.png"
    Image.fromarray(contact_sheet(pairs)).save(sheet_path)
    return paths, sheet_path, psnrs


def _device_flag(device_type: str) -> str:
    return "cpu" if device_type == "cpu" else "auto"


def ensure_hidden_mapper(cfg: DemoConfig, cache_root: Path, device: str, console) -> Path:
    """The slim hidden mapper of ``cfg.generator``: from the cache, or trained with ``ns-edit train-mapper``."""
    from nerfeditor_ns.edit import cli
    from nerfeditor_ns.edit.mapper_cache import cached_mapper_path, finished_mapper, mapper_config

    # the same settings `ns-edit train-mapper --slim --steps S --batch B --seed 0` uses -> the same cache file
    settings = mapper_config(None, cfg.mapper_steps, slim=True, seed=0, batch=cfg.mapper_batch)
    path = cached_mapper_path(cfg.generator, cache_root, settings)
    if finished_mapper(path) is not None:
        console.print(f"hidden mapper: cached {path} (delete it to retrain)")
        return path
    console.rule(f"[bold]ns-edit train-mapper ({cfg.mapper_steps} steps, slim backbone)")
    argv = ["train-mapper", "--generator", str(cfg.generator), "--slim", "--steps", str(cfg.mapper_steps),
            "--batch", str(cfg.mapper_batch), "--seed", "0", "--cache-dir", str(cache_root), "--device", device]
    status = cli.main(argv)
    if status != 0 or not path.is_file():
        raise SystemExit(f"ns-edit train-mapper failed (exit status {status}); see the message above. "
                         "Use --no-edit to skip the edit.")
    return path


def edit_argv(cfg: DemoConfig, run_config: Path, mapper: Path, cache_root: Path, device: str) -> List[str]:
    """The ns-edit command line the demo runs (also printed, so it can be re-run by hand)."""
    return [
        "--load-config", str(run_config),
        "--generator", str(cfg.generator),
        "--hidden-mapper", str(mapper),
        "--cache-dir", str(cache_root),
        "--reference-image", str(cfg.reference_image),
        "--mix-layer", str(cfg.mix_layer),
        "--num-in-yaw", str(cfg.num_in_yaw),
        "--num-in-pitch", "1",
        "--num-out-domain", str(cfg.num_out_domain),
        "--projection-steps", str(cfg.projection_steps),
        "--adjustor-steps", str(cfg.adjustor_steps),
        "--adjustor-batch", "4",
        "--num-components", "8",
        "--finetune-steps", str(cfg.finetune_steps),
        "--video-frames", str(cfg.video_frames),
        "--device", device,
        "--render-scale", str(cfg.render_scale),
        "--seed", str(cfg.seed),
    ]


def run_edit(cfg: DemoConfig, run_config: Path, device_type: str, console) -> Dict[str, Path]:
    """Hidden mapper (cached) + ``ns-edit`` on the trained run; returns the edited run's files."""
    import json

    from nerfeditor_ns.edit import cli

    device = _device_flag(device_type)
    cache_root = (cfg.cache_dir if cfg.cache_dir is not None else cfg.output_dir / "cache").absolute()
    mapper = ensure_hidden_mapper(cfg, cache_root, device, console)
    edit_dir = run_config.parent.with_name(run_config.parent.name + "-edit-reference")
    argv = edit_argv(cfg, run_config, mapper, cache_root, device) + ["--output-dir", str(edit_dir)]
    console.rule("[bold]ns-edit (reference image)")
    console.print("ns-edit " + " ".join(argv), soft_wrap=True, highlight=False, markup=False)
    status = cli.main(argv)
    if status != 0:
        raise SystemExit(f"ns-edit failed (exit status {status}); see the message above. Use --no-edit to skip it.")
    record = json.loads((edit_dir / "edit.json").read_text())
    files = {key: edit_dir / name for key, name in record["files"].items()}
    missing = [str(p) for key, p in files.items() if key != "guides" and not p.is_file()]
    if missing:
        raise SystemExit(f"ns-edit finished but these outputs are missing: {', '.join(missing)}")
    # copies of the headline outputs at the top of the demo folder
    for key, name in (("grid", "edit_before_after.png"), ("video", "edit_turntable" + files["video"].suffix),
                      ("frontal_edited", "edit_frontal.png")):
        shutil.copyfile(files[key], cfg.output_dir / name)
    files["run"] = edit_dir
    return files


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Train, render, edit, write; returns what was written."""
    import torch
    from rich.console import Console

    console = Console()
    check_config(cfg)
    from nerfeditor_ns.method_configs import nerfeditor_tiny

    device_type = nerfeditor_tiny.config.machine.device_type
    if device_type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    timings: Dict[str, float] = {}
    start = time.time()
    trainer, run_config = train_original(cfg, console)
    timings["train"] = time.time() - start

    start = time.time()
    view_paths, sheet_path, psnrs = render_held_out(cfg, trainer.pipeline, console)
    timings["render"] = time.time() - start
    del trainer  # the edit loads the run from disk, like ns-edit does
    result = DemoResult(cfg.output_dir, run_config, view_paths, sheet_path, float(np.mean(psnrs)), timings_s=timings)

    if cfg.edit:
        start = time.time()
        result.edit_files = run_edit(cfg, run_config, device_type, console)
        result.edit_run = result.edit_files["run"]
        timings["edit"] = time.time() - start

    console.rule("[bold green]done")
    console.print(
        f"Trained {cfg.steps} steps in {timings['train']:.1f} s; mean held-out PSNR {result.mean_psnr:.2f} dB.\n"
        f"Held-out renders (left: ground truth, right: nerfeditor-tiny): {cfg.output_dir.resolve()}\n"
        f"Contact sheet: {sheet_path.resolve()}\nOriginal run (config.yml + checkpoint): {run_config.parent}",
        soft_wrap=True, highlight=False,
    )
    if result.edit_run is not None:
        f = result.edit_files
        console.print(
            f"Edit (reference {cfg.reference_image.name}, mix layer {cfg.mix_layer}) in {timings['edit']:.1f} s:\n"
            f"  before/after grid (original | guide | edited): {f['grid']}\n"
            f"  turntable video (original | edited):          {f['video']}\n"
            f"  metrics:                                      {f['metrics']}\n"
            f"  edited run config:                            {f['config']}\n"
            f"  view it (style slider 0 -> 1):  ns-viewer --load-config {f['config']}",
            soft_wrap=True, highlight=False,
        )
    return result


def main(argv: Optional[List[str]] = None) -> None:
    import tyro

    run_demo(tyro.cli(DemoConfig, args=argv))


if __name__ == "__main__":
    from nerfeditor_ns.edit.dependency_notices import quieten_dependency_notices

    quieten_dependency_notices()  # as ns-edit's console script: nerfstudio's / torch's notices once or not at all
    main()
