"""Canny edges for the canny ControlNet, computed from the color image when the client sends none."""
import cv2
import numpy as np


def canny_edges(rgb: np.ndarray, low: int, high: int) -> np.ndarray:
    """uint8 HxW, 255 on edges. Thresholds as in ComfyUI's Canny node (OpenCV hysteresis thresholds)."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.Canny(gray, int(low), int(high))
