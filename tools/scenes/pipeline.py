"""Write the trained networks as an ordinary diffusers StableDiffusionPipeline directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from scenes.models import MAX_TOKENS, SAMPLER, UNET_CONFIG, VAE_CONFIG

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    "text_encoder": ["transformers", "BertModel"],
    "tokenizer": ["transformers", "BertTokenizerFast"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_pipeline(out: Path, unet_state: dict[str, Any], vae_state: dict[str, Any], scaling_factor: float,
                   text_encoder_dir: Path, *, with_text_encoder_weights: bool) -> None:
    """fp16 weights; the text encoder's weights are left out when the caller links them in at load time."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import BertConfig, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    unet.load_state_dict(unet_state)
    unet.to(torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    vae = AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)
    vae.load_state_dict(vae_state)
    vae.to(torch.float16).save_pretrained(out / "vae", safe_serialization=True)
    DPMSolverMultistepScheduler(**SAMPLER).save_pretrained(out / "scheduler")
    BertTokenizerFast.from_pretrained(str(text_encoder_dir), model_max_length=MAX_TOKENS).save_pretrained(
        out / "tokenizer")
    config = BertConfig.from_pretrained(str(text_encoder_dir))
    config.use_attention_mask = True  # the pipeline then masks the padding, as training did
    config.save_pretrained(out / "text_encoder")
    if with_text_encoder_weights:
        shutil.copyfile(text_encoder_dir / "model.safetensors", out / "text_encoder" / "model.safetensors")
    (out / "model_index.json").write_text(
        json.dumps({**MODEL_INDEX, "_diffusers_version": diffusers.__version__}, indent=2) + "\n")
