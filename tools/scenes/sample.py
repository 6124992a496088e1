"""A quick look at a trained pipeline: held-out captions, generated image beside the procedural truth.

    python -m scenes.sample --pipeline DIR --out grid.png [--device cuda]"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scenes.models import IMAGE_SIZE
from scenes.render import render_scenes, to_pil
from scenes.scene import held_out_scenes


def grid(pairs: list[tuple[Any, Any]], columns: int = 4, side: int = IMAGE_SIZE) -> Any:
    from PIL import Image

    rows = (len(pairs) + columns - 1) // columns
    out = Image.new("RGB", (columns * side * 2 + (columns - 1) * 8, rows * side), (255, 255, 255))
    for i, (generated, truth) in enumerate(pairs):
        x, y = (i % columns) * (side * 2 + 8), (i // columns) * side
        out.paste(generated.resize((side, side)), (x, y))
        out.paste(truth.resize((side, side)), (x + side, y))
    return out


def main(argv: list[str] | None = None) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pipeline", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--guidance", type=float, default=7.0)
    a = p.parse_args(argv)
    pipe = StableDiffusionPipeline.from_pretrained(str(a.pipeline), dtype=torch.float32).to(a.device)
    pipe.set_progress_bar_config(disable=True)
    scenes = held_out_scenes(a.count)
    images = pipe([s.caption for s in scenes], height=IMAGE_SIZE, width=IMAGE_SIZE, num_inference_steps=a.steps,
                  guidance_scale=a.guidance, generator=torch.Generator(a.device).manual_seed(0)).images
    grid(list(zip(images, to_pil(render_scenes(scenes, IMAGE_SIZE)), strict=True))).save(a.out)
    for s in scenes:
        print(s.caption)


if __name__ == "__main__":
    main()
