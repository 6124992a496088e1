"""The shapes of the shipped model's networks: a factor-4 VAE and a small text-conditioned UNet."""

from __future__ import annotations

from typing import Any

IMAGE_SIZE = 128  # pixels rendered natively; the service upscales to the size asked for
LATENT_SIZE = IMAGE_SIZE // 4
MAX_TOKENS = 40  # prompt tokens the text encoder sees (the pipeline pads and truncates to this)
TEXT_DIM = 384  # all-MiniLM-L6-v2's hidden size

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": IMAGE_SIZE,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 128], "layers_per_block": 1, "norm_num_groups": 16,
    "mid_block_add_attention": False,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": [32, 64, 128, 192],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": TEXT_DIM, "attention_head_dim": 4, "norm_num_groups": 16,
}

# Stable Diffusion's noise schedule; the pipeline samples with DPM-Solver++ on the same betas.
NOISE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
         "prediction_type": "epsilon"}
SAMPLER = {**NOISE, "algorithm_type": "dpmsolver++", "solver_order": 2, "timestep_spacing": "trailing",
           "final_sigmas_type": "zero", "lower_order_final": True, "steps_offset": 1}


def build_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def build_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)
