"""Which models the batch loop (scheduler.py) serves as Hugging Face generate would: those whose generation
settings add no logits processor it leaves out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inhouse.engines.causal.generation import SamplingParams

Row = tuple[list[int], "SamplingParams"]

# Generation settings that add a logits processor to Hugging Face `generate`, with their neutral values. The
# batch loop applies only what a row asks for (its RowSampler), so a model whose generation_config sets any of
# these runs its rows one at a time through generate instead (same_as_generate below).
_NEUTRAL: dict[str, object] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "renormalize_logits": False, "typical_p": 1.0, "min_p": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "guidance_scale": None, "watermarking_config": None, "remove_invalid_values": False,
    "prefill_chunk_size": None,
}


def same_as_generate(generation_config: Any) -> bool:
    """Whether the model's own generation settings add nothing the batched loop leaves out."""
    return all(getattr(generation_config, k, None) in (None, v) for k, v in _NEUTRAL.items())
