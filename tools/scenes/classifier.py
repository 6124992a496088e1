"""Train the shape classifier the evaluation uses, on shapes drawn by the same renderer and cut out by the same
detector, with distortions (stretch, rotation, blurred edges) like a generator's.

    python -m scenes.classifier   (writes shape_classifier.safetensors beside this file)"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from scenes.detect import CLASSIFIER, blobs, build_classifier, crop
from scenes.render import render_scenes, to_pil
from scenes.scene import Obj, Scene
from scenes.vocab import COLOUR_NAMES, COLOURS, DEFAULT_BACKGROUND, SHAPE_NAMES


def samples(rng: random.Random, n: int) -> tuple[Any, Any]:
    scenes, labels = [], []
    for _ in range(n):
        shape = rng.choice(SHAPE_NAMES)
        colour = rng.choice([c for c in COLOUR_NAMES if c != "white"])
        r = rng.uniform(0.07, 0.3)
        scenes.append(Scene([Obj(shape, colour, COLOURS[colour][0], rng.uniform(r, 1 - r), rng.uniform(r, 1 - r), r)],
                            DEFAULT_BACKGROUND, None))
        labels.append(SHAPE_NAMES.index(shape))
    crops = []
    for im in to_pil(render_scenes(scenes, 128)):
        _, found = blobs(im)
        crops.append(crop(found[0].mask))
    return np.stack(crops), np.array(labels)


def distort(x: Any, gen: Any) -> Any:
    """Random stretch, rotation and edge blur, then a re-threshold at a random level."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) - 0.5) * 0.5
    sx, sy = 0.8 + 0.4 * torch.rand(n, generator=gen), 0.8 + 0.4 * torch.rand(n, generator=gen)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * sx, -sin * sx, torch.zeros(n)], 1),
                         torch.stack([sin * sy, cos * sy, torch.zeros(n)], 1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    level = 0.3 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    return (x > level).float()


def main() -> None:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    xs, ys = samples(random.Random(0), 12000)
    xt, yt = samples(random.Random(1), 1200)
    x, y = torch.from_numpy(xs)[:, None], torch.from_numpy(ys)
    net = build_classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for epoch in range(12):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 256):
            idx = perm[i:i + 256]
            loss = torch.nn.functional.cross_entropy(net(distort(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (net(torch.from_numpy(xt)[:, None]).argmax(1) == torch.from_numpy(yt)).float().mean().item()
            dacc = (net(distort(torch.from_numpy(xt)[:, None], gen)).argmax(1) == torch.from_numpy(yt)).float().mean()
        print(f"epoch {epoch} loss {loss.item():.3f} clean {acc:.3f} distorted {float(dacc):.3f}", flush=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(CLASSIFIER))
    print(f"wrote {CLASSIFIER}")


if __name__ == "__main__":
    main()
