"""Causal language models: loading (GGUF converted once), LoRA training (SFT, DPO) and generation."""
