"""Simple detectors for scored images: the background, the objects on it, their colour names, centres and shape
class (a small CNN trained on rendered shapes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenes.vocab import COLOURS, SHAPE_NAMES

ANALYSIS_SIDE = 128
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as an object pixel
MIN_AREA = 25
CROP = 32
CLASSIFIER = Path(__file__).with_name("shape_classifier.safetensors")
_PALETTE = np.array([rgb for rgb, _, _ in COLOURS.values()], dtype=np.float32)


@dataclass
class Blob:
    area: int
    x: float  # centroid, fractions of the side
    y: float
    rgb: tuple[float, float, float]
    colour: str
    mask: Any  # bool array, the whole image

    def colour_distance(self, name: str) -> float:
        return float(np.linalg.norm(np.array(self.rgb) - np.array(COLOURS[name][0], dtype=np.float32)))


def colour_name(rgb: Any) -> str:
    return list(COLOURS)[int(np.argmin(np.linalg.norm(_PALETTE - np.asarray(rgb, dtype=np.float32), axis=1)))]


def as_array(image: Any) -> Any:
    """RGB uint8 array at the analysis resolution (an upscaled answer is brought back down)."""
    from PIL import Image

    im = image.convert("RGB")
    if im.size != (ANALYSIS_SIDE, ANALYSIS_SIDE):
        im = im.resize((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32)


def blobs(image: Any) -> tuple[tuple[float, float, float], list[Blob]]:
    """The background colour and the objects on it, largest first."""
    from scipy import ndimage

    a = as_array(image)
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3),
                             a[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    fg = np.linalg.norm(a - bg, axis=2) > FOREGROUND_DISTANCE
    labels, n = ndimage.label(fg, structure=np.ones((3, 3)))
    found = []
    for i in range(1, n + 1):
        m = labels == i
        area = int(m.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(m)
        rgb = tuple(float(c) for c in np.median(a[m], axis=0))
        found.append(Blob(area, (xs.mean() + 0.5) / a.shape[1], (ys.mean() + 0.5) / a.shape[0], rgb,  # type: ignore[arg-type]
                          colour_name(rgb), m))
    found.sort(key=lambda b: -b.area)
    return tuple(float(c) for c in bg), found  # type: ignore[return-value]


def crop(mask: Any) -> Any:
    """The mask's bounding square, resized to CROP x CROP, as float32."""
    from PIL import Image

    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(y1 - y0, x1 - x0) + 4
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    box = np.zeros((side, side), dtype=np.uint8)
    sy, sx = round(float(cy) - side / 2), round(float(cx) - side / 2)
    box[ys - sy, xs - sx] = 255
    return np.asarray(Image.fromarray(box).resize((CROP, CROP), Image.Resampling.BILINEAR), dtype=np.float32) / 255


def build_classifier() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, len(SHAPE_NAMES)),
    )


class ShapeClassifier:
    def __init__(self, path: Path = CLASSIFIER) -> None:
        from safetensors.torch import load_file

        self.net = build_classifier()
        self.net.load_state_dict(load_file(str(path)))
        self.net.eval()

    def __call__(self, masks: list[Any]) -> list[str]:
        import torch

        if not masks:
            return []
        x = torch.from_numpy(np.stack([crop(m) for m in masks]))[:, None]
        with torch.no_grad():
            return [SHAPE_NAMES[int(i)] for i in self.net(x).argmax(dim=1)]
