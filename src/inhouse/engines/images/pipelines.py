"""One diffusers pipeline directory loaded once; inpainting and image-to-image reuse its weights
(`from_pipe`). Calls are serialised per model and run off the event loop by the caller."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inhouse.engines.images.layout import Layout, first_weight, plan


@dataclass(frozen=True)
class Render:
    prompt: str
    width: int  # the resolution rendered natively (multiples of 8)
    height: int
    steps: int
    guidance: float
    n: int
    seed: int | None


class DiffusionEngine:
    def __init__(self, path: Path, threads: int, plan_relations: bool = False) -> None:
        import torch
        from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self._inpaint: Any = None
        self._image2image: Any = None
        self.text2image: Any = None
        # An inpainting checkpoint (its UNet also reads the mask and the masked image) cannot run the
        # text-to-image pipeline; it generates by painting a fully masked canvas instead.
        self.inpainting_only = "Inpaint" in json.loads((path / "model_index.json").read_text()).get("_class_name", "")
        # safetensors only: a pipeline directory with pickled weights is refused.
        if self.inpainting_only:
            self._inpaint = AutoPipelineForInpainting.from_pretrained(  # type: ignore[no-untyped-call]
                str(path), use_safetensors=True, dtype=torch.float32)
            self._inpaint.set_progress_bar_config(disable=True)
        else:
            self.text2image = AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
                str(path), use_safetensors=True, dtype=torch.float32)
            self.text2image.set_progress_bar_config(disable=True)
        # oneDNN runs these convolutions faster in channels-last layout (10-20 % per 128 px image, measured here).
        pipe = self._inpaint if self.inpainting_only else self.text2image
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        self.plan_relations = plan_relations
        self.lock = threading.Lock()
        self.busy = 0
        self.last_used = time.monotonic()

    def idle_since(self) -> float | None:
        return None if self.busy else self.last_used

    def _generator(self, seed: int | None) -> Any:
        import torch

        return torch.Generator().manual_seed(seed) if seed is not None else None

    def generate(self, r: Render) -> list[Any]:
        if self.inpainting_only:
            from PIL import Image

            canvas = Image.new("RGB", (r.width, r.height), (127, 127, 127))
            return self.inpaint(r, canvas, Image.new("L", (r.width, r.height), 255))
        layout = plan(r.prompt) if self.plan_relations else None
        if layout is not None:
            return self._generate_planned(r, layout)
        with self.lock:
            out = self.text2image(r.prompt, height=r.height, width=r.width, num_inference_steps=r.steps,
                                  guidance_scale=r.guidance, num_images_per_prompt=r.n,
                                  generator=self._generator(r.seed), output_type="pil")
            return list(out.images)

    def _generate_planned(self, r: Render, layout: Layout) -> list[Any]:
        """Each object drawn in its half from the same starting noise (so the backgrounds agree), the two
        latents joined at the middle, then decoded once."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipe = self.text2image
        f = pipe.vae_scale_factor
        noise = randn_tensor((r.n, pipe.unet.config.in_channels, r.height // f, r.width // f),
                             generator=self._generator(r.seed), dtype=torch.float32)
        with self.lock, torch.no_grad():
            latents = pipe([layout.first, layout.second], height=r.height, width=r.width,
                           num_inference_steps=r.steps, guidance_scale=r.guidance, num_images_per_prompt=r.n,
                           latents=torch.cat([noise, noise]), output_type="latent").images
            keep = first_weight(layout, latents.shape[2], latents.shape[3])
            joined = keep * latents[:r.n] + (1 - keep) * latents[r.n:]
            image = pipe.vae.decode(joined / pipe.vae.config.scaling_factor, return_dict=False)[0]
            return list(pipe.image_processor.postprocess(image, output_type="pil"))

    def inpaint(self, r: Render, image: Any, mask: Any, strength: float = 1.0) -> list[Any]:
        """`mask` is white where to paint (the diffusers convention)."""
        from diffusers import AutoPipelineForInpainting

        with self.lock:
            if self._inpaint is None:
                self._inpaint = AutoPipelineForInpainting.from_pipe(self.text2image)
                self._inpaint.set_progress_bar_config(disable=True)
            out = self._inpaint(r.prompt, image=image, mask_image=mask, height=r.height, width=r.width,
                                num_inference_steps=r.steps, guidance_scale=r.guidance, strength=strength,
                                num_images_per_prompt=r.n, generator=self._generator(r.seed), output_type="pil")
            return list(out.images)

    def vary(self, r: Render, image: Any, strength: float) -> list[Any]:
        from diffusers import AutoPipelineForImage2Image

        if self.inpainting_only:  # image-to-image as a partial repaint of the whole picture
            from PIL import Image

            return self.inpaint(r, image, Image.new("L", image.size, 255), strength)

        with self.lock:
            if self._image2image is None:
                self._image2image = AutoPipelineForImage2Image.from_pipe(self.text2image)
                self._image2image.set_progress_bar_config(disable=True)
            out = self._image2image(r.prompt, image=image, strength=strength, num_inference_steps=r.steps,
                                    guidance_scale=r.guidance, num_images_per_prompt=r.n,
                                    generator=self._generator(r.seed), output_type="pil")
            return list(out.images)

    def close(self) -> None:
        self.text2image = self._inpaint = self._image2image = None
