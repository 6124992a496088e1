"""Benchmark: the shipped image model (inhouse-scenes) at 256x256 through the API (dall-e-2, default steps)
against the bare diffusers calls it makes (128 px native, same steps, guidance and seed), in one run: a
one-object prompt (one pipeline call) and a relation prompt (planned: one call drawing two placed objects from
the same noise, the latents joined and decoded once, exactly as the engine does).
The issue's aim: <= 2 s per 256x256 image on a 2-core machine.
Usage: python bench/default_image_model.py [--rounds 5]"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
import torch
from bench.timing import timed
from tests.e2e.serve import ServeProcess

from inhouse.config import Settings
from inhouse.engines.images.assembly import pipeline_dir
from inhouse.engines.images.layout import first_weight, plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from diffusers import AutoPipelineForText2Image

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        entry = next(e for e in settings.all_models() if e.kind == "image")
        assert entry.steps and entry.guidance and entry.max_side
        torch.set_num_threads(os.cpu_count() or 1)
        pipe = AutoPipelineForText2Image.from_pretrained(str(pipeline_dir(entry, settings.data_dir / "models")),
                                                         use_safetensors=True, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        pipe.unet.to(memory_format=torch.channels_last)  # the engine's layout (engines/images/pipelines.py)
        pipe.vae.to(memory_format=torch.channels_last)
        single, relation = "a red circle on the left", "a red circle above a blue square"
        layout = plan(relation)
        assert layout is not None
        planned = [layout.first, layout.second]

        def raw(prompts: list[str]) -> None:
            pipe(prompts, height=entry.max_side, width=entry.max_side, num_inference_steps=entry.steps,
                 guidance_scale=entry.guidance, generator=torch.Generator().manual_seed(1))

        def raw_planned() -> None:
            """What the product does for a relation: both halves in one call from the same noise, the latents
            joined, one decode (not two)."""
            side = entry.max_side
            f = pipe.vae_scale_factor
            noise = torch.randn((1, pipe.unet.config.in_channels, side // f, side // f),
                                generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                latents = pipe(planned, height=side, width=side, num_inference_steps=entry.steps,
                               guidance_scale=entry.guidance, latents=torch.cat([noise, noise]),
                               output_type="latent").images
                keep = first_weight(layout, latents.shape[2], latents.shape[3])
                joined = keep * latents[:1] + (1 - keep) * latents[1:]
                image = pipe.vae.decode(joined / pipe.vae.config.scaling_factor, return_dict=False)[0]
                pipe.image_processor.postprocess(image, output_type="pil")

        raw_single = timed(lambda: raw([single]), args.rounds)
        raw_two = timed(raw_planned, args.rounds)
        pipe = None
        server = ServeProcess(Path(tmp) / "data").start()
        server.settle()
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", timeout=600)

            def api(prompt: str) -> None:
                client.images.generate(model="dall-e-2", prompt=prompt, size="256x256", response_format="b64_json",
                                       extra_body={"seed": 1})

            api_single = timed(lambda: api(single), args.rounds)
            api_relation = timed(lambda: api(relation), args.rounds)
        finally:
            server.stop()
    print(f"inhouse-scenes, {entry.steps} steps, guidance {entry.guidance}, median of {args.rounds}")
    for name, api_s, raw_s in (("one object", api_single, raw_single), ("relation", api_relation, raw_two)):
        print(f"{name:10}  raw pipeline ({entry.max_side} px) {raw_s * 1000:7.1f} ms   API 256x256 (dall-e-2) "
              f"{api_s * 1000:7.1f} ms   ratio {api_s / raw_s:4.2f}   aim <= 2000 ms")


if __name__ == "__main__":
    main()
