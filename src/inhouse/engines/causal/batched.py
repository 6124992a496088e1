"""Batched generation: prompts decoded together in one left-padded batch with a KV cache, each row with its own
sampling parameters and random generator; a row that finishes leaves the batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inhouse.engines.causal.generation import SamplingParams
    from inhouse.engines.causal.sampling import RowSampler

Row = tuple[list[int], "SamplingParams"]

# Generation settings that add a logits processor to Hugging Face `generate`, with their neutral values. The
# batched loop applies only what CausalEngine.generate asks for (its RowSampler), so a model whose
# generation_config sets any of these is generated row by row instead (same_as_generate below).
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


def plan(rows: Sequence[Row], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Row indices grouped into batches. Rows are taken by prompt length, so a batch pads little; a batch holds
    at most `max_rows` rows and rows x (longest prompt + most new tokens) <= `max_tokens` (its KV cache and
    prefill at their largest), except a row that alone passes it, which runs alone."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches: list[list[int]] = []
    current: list[int] = []
    most_new = 0  # the current batch's most new tokens
    for i in order:
        ids, params = rows[i]
        # Taken by length, this row's prompt is the batch's longest.
        width = len(ids) + max(most_new, params.max_new_tokens)
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current, most_new = [], 0
        current.append(i)
        most_new = max(most_new, params.max_new_tokens)
    if current:
        batches.append(current)
    return batches


def decode(step: Callable[[Callable[[Any], Any]], Any], rows: Sequence[Row], samplers: Sequence[RowSampler],
           eos: set[int], pad_id: int, stopped: Callable[[list[int], tuple[str, ...]], bool]) -> list[list[int]]:
    """The new token ids of every row, decoded in one batch. Each forward pass runs as `step(lambda model:
    model(...))`: the caller takes the model's lock (and torch.inference_mode) per step, so that other work on
    the model may run between two steps. `samplers[i]` chooses row i's tokens (sampling.RowSampler, the same
    choice `generate` makes through its logits processor).

    Greedy rows take the argmax of the same logits `generate` computes: left padding is masked and each row's
    positions count its own tokens only, so a row's logits differ from its unbatched run's by float rounding
    alone and its text is the same unless two tokens tie to rounding.

    Sampled rows draw from their own torch.Generator (sampling.row_generator), through the same warpers
    `generate` applies, so a row's draws never depend on its neighbours. Hence: the same rows with the same
    seeds give the same text (the batch's shape is fixed by the rows); and a seeded row draws what `generate`
    draws after torch.manual_seed(seed) whenever the logits are equal, which float rounding across batch shapes
    can break.

    A row ends at an eos token, at a stop string in its decoded text (checked by `stopped`, as generate's
    stopping criterion does), at its max_new_tokens, once its sampler's grammar is whole, or when no token
    keeps its text valid; it then leaves the batch (its KV cache rows dropped), so later steps cost only the
    rows still running."""
    import torch

    n = len(rows)
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (ids, _) in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[i, width - len(ids):] = 1
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate derives them from the mask

    out: list[list[int]] = [[] for _ in rows]
    active = list(range(n))  # the row behind each line of the batch
    # generate drops a mask of all ones (no padding) and attends causally; so does this loop, for equal logits.
    def forward(**inputs: Any) -> Any:
        return step(lambda model: model(**inputs, use_cache=True, logits_to_keep=1))

    result = forward(input_ids=input_ids, attention_mask=None if bool(mask.all()) else mask, position_ids=positions)
    cache = result.cache
    next_pos = positions[:, -1] + 1
    while True:
        logits = result.logits[:, -1].to(copy=True, dtype=torch.float32)
        tokens = torch.full((len(active),), pad_id, dtype=torch.long)
        keep = []
        for j, row in enumerate(active):
            sampler, params = samplers[row], rows[row][1]
            token = sampler.choose(logits[j])
            if token is None:  # nothing keeps the row's text valid: it ends as it is
                continue
            tokens[j] = token
            sampler.accept(token)
            out[row].append(token)
            done = (token in eos or len(out[row]) >= params.max_new_tokens or sampler.finished
                    or (bool(params.stop) and stopped(out[row], params.stop)))
            if not done:
                keep.append(j)
        if not keep:
            return out
        if len(keep) < len(active):
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
            active = [active[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
        result = forward(input_ids=tokens[:, None], attention_mask=None if bool(mask.all()) else mask,
                         position_ids=next_pos[:, None], cache=cache)
        next_pos = next_pos + 1
