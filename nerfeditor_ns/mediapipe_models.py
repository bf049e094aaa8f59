"""The pretrained models that ship inside the ``mediapipe`` wheel, behind one small interface.

``pip install "nerfeditor-ns[faces]"`` installs mediapipe 0.10.11, whose wheel carries its models (nothing is
downloaded at run time). Every feature of the project that needs a person or face model goes through this module:

- :func:`person_masks`: soft person masks (MediaPipe selfie segmentation, the general 256 x 256 model): person,
  hair and clothes = 1, background = 0. The edit-fidelity benchmark measures "outside the subject" on them.
- :func:`face_boxes`, :func:`face_scores`: the most confident face per image, its box or its score (MediaPipe face
  detection, short range). The evaluation's FR (face recognition score) is the score.
- :func:`face_landmarks`: 468 3D landmarks per face (MediaPipe face mesh): the evaluation's pose error and APS.

mediapipe is imported lazily, on the first call: importing this module is cheap and works without it;
:func:`available` says whether it is installed, and a call without it raises :class:`MediapipeUnavailable` with
the install command.
"""

from __future__ import annotations

import atexit
import importlib.util
from typing import Any, Dict, List, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor
from torch.nn import functional as F

INSTALL_HINT = 'pip install "nerfeditor-ns[faces]"  (mediapipe 0.10.11; its models ship inside the wheel)'
MODEL_SIZE = 256
"""Images smaller than this are upsampled to it (bilinear) before a model sees them: both models work at 256 px
internally, and a 64 px render would otherwise lose the person's outline."""


class MediapipeUnavailable(ImportError):
    """mediapipe is not installed (the ``faces`` extra)."""


def available() -> bool:
    """Whether mediapipe can be imported (without importing it)."""
    return importlib.util.find_spec("mediapipe") is not None


def _solutions() -> Any:
    try:
        import mediapipe as mp
    except ImportError as err:
        raise MediapipeUnavailable(f"mediapipe is not installed ({err}). Install it with: {INSTALL_HINT}") from None
    return mp.solutions


_MODELS: Dict[Tuple[str, Tuple[Tuple[str, Any], ...]], Any] = {}


def _model(kind: str, **settings: Any) -> Any:
    """The ``face_detection`` / ``face_mesh`` model with these settings, built once per process (an edit's metrics
    ask several times; static-image models keep nothing from one image to the next, so reusing one changes no
    result). Closed at exit."""
    key = (kind, tuple(sorted(settings.items())))
    if key not in _MODELS:
        solutions = _solutions()
        build = {"face_detection": lambda: solutions.face_detection.FaceDetection(**settings),
                 "face_mesh": lambda: solutions.face_mesh.FaceMesh(static_image_mode=True, **settings)}[kind]
        if not _MODELS:
            atexit.register(_close_models)
        _MODELS[key] = build()
    return _MODELS[key]


def _close_models() -> None:
    while _MODELS:
        _, model = _MODELS.popitem()
        model.close()


def _as_uint8(images: Float[Tensor, "N H W 3"]) -> Tuple[List[Any], int, int]:
    """[0, 1] float images -> uint8 HxWx3 numpy arrays at >= MODEL_SIZE on the short side, and the original H, W."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected [N, H, W, 3] RGB images in [0, 1], got {tuple(images.shape)}.")
    n, h, w, _ = images.shape
    x = images.detach().float().cpu().clamp(0, 1).permute(0, 3, 1, 2)
    scale = max(1.0, MODEL_SIZE / min(h, w))
    if scale > 1.0:
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
    arrays = [(img.permute(1, 2, 0) * 255).round().to(torch.uint8).contiguous().numpy() for img in x]
    return arrays, h, w


def person_masks(images: Float[Tensor, "N H W 3"]) -> Float[Tensor, "N H W"]:
    """Soft person masks in [0, 1] at the images' size (selfie segmentation, general model)."""
    arrays, h, w = _as_uint8(images)
    masks = []
    with _solutions().selfie_segmentation.SelfieSegmentation(model_selection=0) as model:
        for array in arrays:
            result = model.process(array)
            masks.append(torch.from_numpy(result.segmentation_mask.copy()).float())
    stacked = torch.stack(masks)[:, None]
    if stacked.shape[-2:] != (h, w):
        stacked = F.interpolate(stacked, size=(h, w), mode="bilinear", align_corners=False)
    return stacked[:, 0].clamp(0, 1)


def _best_faces(images: Float[Tensor, "N H W 3"], min_confidence: float) -> List[Any]:
    """The most confident face detection per image (None where none reaches ``min_confidence``)."""
    arrays, _, _ = _as_uint8(images)
    best: List[Any] = []
    model = _model("face_detection", model_selection=0, min_detection_confidence=min_confidence)
    for array in arrays:
        detections = model.process(array).detections or []
        best.append(max(detections, key=lambda d: d.score[0]) if detections else None)
    return best


def face_boxes(
    images: Float[Tensor, "N H W 3"], min_confidence: float = 0.5
) -> List[Optional[Tuple[float, float, float, float]]]:
    """The most confident face per image as (x0, y0, x1, y1) fractions of the image, or None where none is found
    (face detection, short-range model: faces within about 2 m of the camera)."""
    boxes: List[Optional[Tuple[float, float, float, float]]] = []
    for detection in _best_faces(images, min_confidence):
        if detection is None:
            boxes.append(None)
            continue
        b = detection.location_data.relative_bounding_box
        boxes.append((float(b.xmin), float(b.ymin), float(b.xmin + b.width), float(b.ymin + b.height)))
    return boxes


def face_scores(images: Float[Tensor, "N H W 3"], floor: float = 0.05) -> Float[Tensor, "N"]:
    """Confidence in [0, 1] that each image shows a face: the score of its most confident face detection (0 where
    nothing scores above ``floor``)."""
    return torch.tensor([0.0 if d is None else float(d.score[0]) for d in _best_faces(images, floor)])


FACE_MESH_POINTS = 468
"""Landmarks per face of MediaPipe's face mesh."""
MESH_LEFT_EYE = (33, 133, 160, 159, 158, 144, 145, 153)
"""Face-mesh points around the eye on the image's left (the subject's right eye); 33 is its outer corner."""
MESH_RIGHT_EYE = (263, 362, 387, 386, 385, 373, 374, 380)
"""Face-mesh points around the eye on the image's right; 263 is its outer corner."""
MESH_MOUTH_CORNERS = (61, 291)
"""Face-mesh points of the mouth corners."""


def face_landmarks(images: Float[Tensor, "N H W 3"], min_confidence: float = 0.05) -> List[Optional[Tensor]]:
    """468 3D face landmarks per image ([468, 3], pixels of the image: x right, y down, z away from the camera on
    x's scale; MediaPipe face mesh, static images), or None where no face is found."""
    arrays, h, w = _as_uint8(images)
    out: List[Optional[Tensor]] = []
    model = _model("face_mesh", max_num_faces=1, refine_landmarks=False, min_detection_confidence=min_confidence)
    for array in arrays:
        faces = model.process(array).multi_face_landmarks
        if not faces:
            out.append(None)
            continue
        points = torch.tensor([[p.x * w, p.y * h, p.z * w] for p in faces[0].landmark], dtype=torch.float32)
        out.append(points)
    return out
