"""Diffusion pipelines from local directories: text-to-image, inpainting and image-to-image sharing weights."""
