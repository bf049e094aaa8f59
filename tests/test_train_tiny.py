"""Real training through ``ns-train nerfeditor-tiny`` on the small face scene, offline, then eval_setup + render."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

SCENE = Path(__file__).resolve().parent / "data" / "face_small"
STEPS = 120

# Runs ns-train's real entry point with every socket connection refused: any download attempt fails loudly.
OFFLINE_NS_TRAIN = """
import socket, sys
def refuse(*args, **kwargs):
    raise RuntimeError("NETWORK ACCESS ATTEMPTED")
socket.socket.connect = refuse
socket.create_connection = refuse
from nerfstudio.scripts.train import entrypoint
sys.argv = ["ns-train"] + sys.argv[1:]
entrypoint()
"""


def test_ns_train_tiny_offline_then_eval_setup_renders(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "empty_torch_home")}
    args = [
        "nerfeditor-tiny",
        "--data", str(SCENE),
        "--output-dir", str(tmp_path / "outputs"),
        "--max-num-iterations", str(STEPS),
        "--vis", "tensorboard",
        "--machine.device-type", "cpu",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_NS_TRAIN, *args], capture_output=True, text=True, env=env, timeout=600
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "NETWORK ACCESS ATTEMPTED" not in log
    assert "LPIPS left out" in log  # no AlexNet in the (empty) hub cache: no LPIPS, one warning

    configs = list((tmp_path / "outputs").rglob("config.yml"))
    assert len(configs) == 1
    checkpoints = list(configs[0].parent.glob("nerfstudio_models/step-*.ckpt"))
    assert checkpoints, "no checkpoint written"

    from nerfstudio.utils.eval_utils import eval_setup

    config, pipeline, checkpoint_path, step = eval_setup(configs[0], test_mode="test")
    assert step == STEPS - 1
    model = pipeline.model
    assert model.lpips is None
    assert type(model).__name__ == "NerfEditorModel"

    dataset = pipeline.datamanager.eval_dataset
    camera = dataset.cameras[0:1].to(model.device)
    gt = dataset.get_image_float32(0)[..., :3]
    with torch.no_grad():
        outputs = model.get_outputs_for_camera(camera)
    rgb = outputs["rgb"]
    assert rgb.shape == gt.shape
    assert torch.isfinite(rgb).all()
    psnr_trained = float(-10 * torch.log10(((rgb - gt) ** 2).mean()))

    # the same model freshly initialised renders far worse: the checkpoint carries the training
    torch.manual_seed(0)
    fresh = config.pipeline.setup(device="cpu", test_mode="test").model
    fresh.eval()
    with torch.no_grad():
        rgb_fresh = fresh.get_outputs_for_camera(camera)["rgb"]
    psnr_fresh = float(-10 * torch.log10(((rgb_fresh - gt) ** 2).mean()))
    print(f"held-out PSNR after {STEPS} steps: {psnr_trained:.2f} dB (untrained: {psnr_fresh:.2f} dB)")
    assert psnr_trained > 16.0
    assert psnr_trained > psnr_fresh + 3.0

    # eval metrics through the pipeline (no LPIPS key offline)
    metrics, images = model.get_image_metrics_and_images(outputs, {"image": gt})
    assert set(metrics) == {"psnr", "ssim"}
    assert images["img"].shape == (gt.shape[0], 2 * gt.shape[1], 3)
