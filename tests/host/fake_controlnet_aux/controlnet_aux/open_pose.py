"""Stand-in for controlnet_aux.open_pose (see the package docstring)."""
from __future__ import annotations

import numpy as np


def draw_poses(poses, H, W, draw_body=True, draw_hand=True, draw_face=True):
    canvas = np.zeros((H, W, 3), np.uint8)
    for pose in poses:
        for kp in pose.body.keypoints:
            if kp is not None:
                y, x = int(kp.y * (H - 1)), int(kp.x * (W - 1))
                canvas[max(0, y - 1): y + 2, max(0, x - 1): x + 2] = 255
    return canvas
