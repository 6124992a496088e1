"""Benchmark: latency of /v1/images/generations and /edits vs the raw diffusers call with the same model,
size, steps and seed, in one run. The model is a small random Stable Diffusion built here (no registry
carries diffusion weights); pass --model DIR to use a real pipeline directory instead.
Usage: python bench/images.py [--size 512] [--steps 8] [--rounds 3] [--model DIR]"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
import torch
from bench.timing import timed
from PIL import Image
from tests.e2e.serve import ServeProcess
from tests.engines.tiny_sd import build_tiny_sd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", type=Path)
    args = ap.parse_args()
    from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        model = (args.model or build_tiny_sd(Path(tmp) / "sd")).resolve()
        size = f"{args.size}x{args.size}"
        pipe = AutoPipelineForText2Image.from_pretrained(str(model), use_safetensors=True, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        # The same memory layout as the engine (engines/images/pipelines.py), so the ratio is our overhead alone.
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        inpaint = AutoPipelineForInpainting.from_pipe(pipe)
        image = Image.new("RGB", (args.size, args.size), (120, 40, 40))
        mask = Image.new("L", (args.size, args.size), 0)
        mask.paste(255, (0, 0, args.size // 2, args.size // 2))
        edit_png = Image.new("RGBA", (args.size, args.size), (120, 40, 40, 255))
        edit_png.paste((0, 0, 0, 0), (0, 0, args.size // 2, args.size // 2))
        buf = io.BytesIO()
        edit_png.save(buf, format="PNG")

        def raw_gen() -> None:
            pipe("a red circle", height=args.size, width=args.size, num_inference_steps=args.steps,
                 guidance_scale=9.0, generator=torch.Generator().manual_seed(1))

        def raw_edit() -> None:
            inpaint("a red circle", image=image, mask_image=mask, height=args.size, width=args.size, strength=1.0,
                    num_inference_steps=args.steps, guidance_scale=9.0, generator=torch.Generator().manual_seed(1))

        raw = {"generation": timed(raw_gen, args.rounds), "edit": timed(raw_edit, args.rounds)}
        pipe = inpaint = None  # free the memory before the server loads its own copy
        env = {"INHOUSE_MODELS": json.dumps([{"id": "bench-sd", "kind": "image", "path": str(model),
                                              "aliases": ["dall-e-2"]}]),
               "INHOUSE_IMAGES__STEPS_STANDARD": str(args.steps), "INHOUSE_IMAGES__MAX_GENERATE_SIDE": "1024"}
        server = ServeProcess(Path(tmp) / "data", env=env).start()
        server.settle()
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", timeout=600)

            def api_gen() -> None:
                client.images.generate(model="dall-e-2", prompt="a red circle", size=size,  # type: ignore[arg-type]
                                       response_format="b64_json", extra_body={"seed": 1})

            def api_edit() -> None:
                client.images.edit(model="dall-e-2", image=("e.png", buf.getvalue()), prompt="a red circle",
                                   size=size, response_format="b64_json", extra_body={"seed": 1})  # type: ignore[arg-type]

            api = {"generation": timed(api_gen, args.rounds), "edit": timed(api_edit, args.rounds)}
        finally:
            server.stop()
    print(f"model {'tiny random SD' if args.model is None else model}, {size}, {args.steps} steps, median of "
          f"{args.rounds}")
    for kind in ("generation", "edit"):
        print(f"{kind:<11} raw {raw[kind] * 1000:8.1f} ms   API {api[kind] * 1000:8.1f} ms   "
              f"ratio {api[kind] / raw[kind]:5.2f}  (aim <= 1.05)")


if __name__ == "__main__":
    main()
