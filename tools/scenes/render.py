"""Draw scenes as anti-aliased signed-distance shapes, a whole batch at once, on any torch device."""

from __future__ import annotations

from typing import Any

from scenes.scene import Scene
from scenes.vocab import SHAPE_NAMES


def _box(px: Any, py: Any, bx: float, by: float) -> Any:
    import torch

    qx, qy = px.abs() - bx, py.abs() - by
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _triangle(px: Any, py: Any) -> Any:
    """Equilateral triangle pointing up (Inigo Quilez's sdEquilateralTriangle), y up."""
    import torch

    k, r = 3 ** 0.5, 1.0
    py = py + 0.25  # centre the triangle's area, not its circumcentre, on the object's position
    x, y = px.abs() - r, py + r / k
    flip = (x + k * y) > 0
    x, y = torch.where(flip, (x - k * y) / 2, x), torch.where(flip, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * r, 0)
    return -torch.sqrt(x * x + y * y) * torch.sign(y)


def _star(px: Any, py: Any, rf: float = 0.45) -> Any:
    """Five-pointed star (sdStar5), y up."""
    import torch

    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    x, y = px.abs(), py
    d = (k1x * x + k1y * y).clamp(min=0)
    x, y = x - 2 * d * k1x, y - 2 * d * k1y
    d = (k2x * x + k2y * y).clamp(min=0)
    x, y = x - 2 * d * k2x, y - 2 * d * k2y
    x, y = x.abs(), y - 1.0
    bax, bay = rf * -k1y - 0.0, rf * k1x - 1.0
    h = ((x * bax + y * bay) / (bax * bax + bay * bay)).clamp(0.0, 1.0)
    dist = torch.sqrt((x - bax * h) ** 2 + (y - bay * h) ** 2)
    return dist * torch.sign(y * bax - x * bay)


def _rhombus(px: Any, py: Any, bx: float = 0.85, by: float = 1.05) -> Any:
    import torch

    x, y = px.abs(), py.abs()
    h = (((bx - 2 * x) * bx - (by - 2 * y) * by) / (bx * bx + by * by)).clamp(-1.0, 1.0)
    dist = torch.sqrt((x - 0.5 * bx * (1 - h)) ** 2 + (y - 0.5 * by * (1 + h)) ** 2)
    return dist * torch.sign(x * by + y * bx - bx * by)


def shape_distances(px: Any, py: Any) -> Any:
    """Signed distances (in radii) to every shape, stacked in SHAPE_NAMES order; px/py in radii, y up."""
    import torch

    d = {
        "circle": torch.sqrt(px * px + py * py) - 1.0,
        "square": _box(px, py, 0.86, 0.86),
        "triangle": _triangle(px, py * 1.0 + 0.0),
        "star": _star(px, py * 1.0 + 0.1),
        "diamond": _rhombus(px, py),
        "cross": torch.minimum(_box(px, py, 1.0, 0.34), _box(px, py, 0.34, 1.0)),
    }
    return torch.stack([d[name] for name in SHAPE_NAMES], dim=-1)


def render_params(scenes: list[Scene]) -> dict[str, Any]:
    """The numeric description of a batch (two object slots; an empty slot has radius 0)."""
    import torch

    n = len(scenes)
    shape = torch.zeros(n, 2, dtype=torch.long)
    centre = torch.zeros(n, 2, 2)
    radius = torch.zeros(n, 2)
    colour = torch.zeros(n, 2, 3)
    background = torch.zeros(n, 3)
    for i, s in enumerate(scenes):
        background[i] = torch.tensor(s.background, dtype=torch.float32) / 255
        for j, o in enumerate(s.objects[:2]):
            shape[i, j] = SHAPE_NAMES.index(o.shape)
            centre[i, j] = torch.tensor((o.x, o.y))
            radius[i, j] = o.radius
            colour[i, j] = torch.tensor(o.rgb, dtype=torch.float32) / 255
    return {"shape": shape, "centre": centre, "radius": radius, "colour": colour, "background": background}


def render(params: dict[str, Any], size: int, device: Any = "cpu") -> Any:
    """Images in [0, 1], shape (n, 3, size, size)."""
    import torch

    p = {k: v.to(device) for k, v in params.items()}
    n = p["shape"].shape[0]
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    img = p["background"][:, :, None, None].expand(n, 3, size, size).clone()
    for j in range(p["shape"].shape[1]):
        r = p["radius"][:, j].clamp(min=1e-6)[:, None, None]
        px = (gx[None] - p["centre"][:, j, 0, None, None]) / r
        py = -(gy[None] - p["centre"][:, j, 1, None, None]) / r
        d = shape_distances(px, py)  # (n, H, W, shapes)
        d = torch.gather(d, -1, p["shape"][:, j].view(n, 1, 1, 1).expand(n, size, size, 1))[..., 0]
        alpha = (0.5 - d * r * size).clamp(0, 1) * (p["radius"][:, j] > 0).float()[:, None, None]
        img = img * (1 - alpha[:, None]) + p["colour"][:, j, :, None, None] * alpha[:, None]
    return img


def render_scenes(scenes: list[Scene], size: int, device: Any = "cpu") -> Any:
    return render(render_params(scenes), size, device)


def to_pil(images: Any) -> list[Any]:
    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
