"""Pose Extract: OpenPose keypoints from an IMAGE with the optional ``controlnet-aux`` package.

The output is ``POSE_KEYPOINT`` in the format of comfyui_controlnet_aux (one dict per frame with ``people``,
each with ``pose_keypoints_2d`` as 18 OpenPose body points ``[x, y, confidence, ...]`` in pixels, plus
``canvas_width`` / ``canvas_height``), so it plugs into PATA Align like DWPose from that pack, and the rendered
pose maps as an IMAGE for an OpenPose ControlNet. ``controlnet_aux`` is imported only when the node runs.
"""
from __future__ import annotations

import logging

import numpy as np

from ._common import CATEGORY, PoseAnimateError, input_error

NODE = "Pose Extract"
log = logging.getLogger(__name__)

MISSING = (
    "the optional package 'controlnet-aux' is not installed in ComfyUI's Python. Fix: run "
    "`pip install controlnet-aux` with ComfyUI's Python (or `pip install poseanimate[pose]`) and restart "
    "ComfyUI; or use 'DWPose Estimator' from comfyui_controlnet_aux and connect its POSE_KEYPOINT output to "
    "PATA Align instead."
)


def _import_detector():
    try:
        from controlnet_aux import OpenposeDetector
        from controlnet_aux.open_pose import draw_poses
    except ImportError as exc:
        raise PoseAnimateError(f"{NODE}: {MISSING} (import error: {exc})") from None
    return OpenposeDetector, draw_poses


def _comfy_hooks():
    """(ProgressBar class, interrupt check) inside ComfyUI; (None, no-op) elsewhere (tests, scripts)."""
    try:
        import comfy.model_management as mm
        import comfy.utils
    except ImportError:
        return None, lambda: None
    return comfy.utils.ProgressBar, mm.throw_exception_if_processing_interrupted


def _resize_for_detection(frame: np.ndarray, resolution: int) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    k = resolution / min(h, w)
    size = (max(64, int(round(w * k / 64)) * 64), max(64, int(round(h * k / 64)) * 64))
    return cv2.resize(frame, size, interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def _flat(points, width: int, height: int, count: int | None = None) -> list[float]:
    out = []
    for kp in points or []:
        if kp is None:
            out += [0.0, 0.0, 0.0]
        else:
            out += [float(kp.x) * width, float(kp.y) * height, float(getattr(kp, "score", 1.0))]
    if count is not None and len(out) < 3 * count:
        out += [0.0] * (3 * count - len(out))
    return out


def poses_to_keypoint_dict(poses, width: int, height: int) -> dict:
    """controlnet_aux PoseResult list (coordinates normalised to 0..1) -> one POSE_KEYPOINT frame dict."""
    people = []
    for pose in poses:
        person = {"pose_keypoints_2d": _flat(pose.body.keypoints, width, height, 18)}
        if pose.face is not None:
            person["face_keypoints_2d"] = _flat(pose.face, width, height)
        if pose.left_hand is not None:
            person["hand_left_keypoints_2d"] = _flat(pose.left_hand, width, height)
        if pose.right_hand is not None:
            person["hand_right_keypoints_2d"] = _flat(pose.right_hand, width, height)
        people.append(person)
    return {"people": people, "canvas_width": int(width), "canvas_height": int(height)}


class PoseAnimatePoseExtract:
    DESCRIPTION = (
        "Detects OpenPose body keypoints (and optionally hands and face) in every frame of an IMAGE batch with "
        "the optional controlnet-aux package. Gives POSE_KEYPOINT (comfyui_controlnet_aux format, for PATA "
        "Align) and the rendered pose maps. Needs `pip install controlnet-aux`; the detector weights come from "
        "the Hugging Face repo or local folder in 'model'."
    )
    CATEGORY = f"{CATEGORY}/Pose"
    FUNCTION = "extract"
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose_keypoint", "pose_image")
    OUTPUT_TOOLTIPS = (
        "One dict per frame: 'people' with 18-point OpenPose 'pose_keypoints_2d' in pixels, 'canvas_width', "
        "'canvas_height' (the comfyui_controlnet_aux format). Connect to PATA Align.",
        "The detected poses drawn as OpenPose maps at the input size, for an OpenPose ControlNet or a preview.",
    )

    def __init__(self):
        self._detector = None
        self._detector_key = None

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Frames to detect people in (a batch is processed frame by frame)."}),
                "model": ("STRING", {"default": "lllyasviel/Annotators", "tooltip":
                          "Hugging Face repo id or a local folder holding body_pose_model.pth (and "
                          "hand_pose_model.pth / facenet.pth for hands and face)."}),
                "detect_resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64, "tooltip":
                                      "Shorter side the frame is resized to for detection; larger finds small "
                                      "people better and is slower."}),
                "include_hands": ("BOOLEAN", {"default": False, "tooltip": "Also detect hand keypoints."}),
                "include_face": ("BOOLEAN", {"default": False, "tooltip": "Also detect face keypoints."}),
            },
        }

    def _get_detector(self, model: str):
        detector_cls, draw_poses = _import_detector()
        if self._detector is None or self._detector_key != model:
            try:
                self._detector = detector_cls.from_pretrained(model)
            except Exception as exc:  # download or file errors: say which input to change
                raise input_error(NODE, "model", f"could not load the OpenPose detector from {model!r} ({exc})",
                                  "give a local folder with body_pose_model.pth, or a reachable Hugging Face "
                                  "repo id such as lllyasviel/Annotators") from None
            self._detector_key = model
        return self._detector, draw_poses

    def extract(self, image, model, detect_resolution, include_hands, include_face):
        import torch

        if not isinstance(model, str) or not model.strip():
            raise input_error(NODE, "model", "is empty", "give a Hugging Face repo id or a local folder")
        if image.ndim != 4 or image.shape[-1] < 3:
            raise input_error(NODE, "image", f"expected an IMAGE batch (B, H, W, 3), got {tuple(image.shape)}",
                              "connect a Load Image or another IMAGE output")
        detector, draw_poses = self._get_detector(model.strip())
        progress_cls, check_interrupt = _comfy_hooks()
        bar = progress_cls(int(image.shape[0])) if progress_cls else None
        frames, maps = [], []
        height, width = int(image.shape[1]), int(image.shape[2])
        for i in range(image.shape[0]):
            check_interrupt()
            rgb = (image[i, :, :, :3].float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            small = _resize_for_detection(rgb, int(detect_resolution))
            poses = detector.detect_poses(small, include_hand=bool(include_hands), include_face=bool(include_face))
            if not poses:
                log.warning("%s: no person found in frame %d", NODE, i)
            frames.append(poses_to_keypoint_dict(poses, width, height))
            canvas = draw_poses(poses, height, width, draw_body=True, draw_hand=bool(include_hands),
                                draw_face=bool(include_face))
            maps.append(torch.from_numpy(np.ascontiguousarray(canvas[..., :3])).float() / 255.0)
            if bar is not None:
                bar.update(1)
        return (frames, torch.stack(maps))
