"""LoRA adapters as safetensors bytes (never pickle), with their LoRA settings in the file's metadata."""

from __future__ import annotations

import json
import struct
from typing import Any

LORA_ALPHA_PER_RANK = 2


def lora_config(rank: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank * LORA_ALPHA_PER_RANK, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def dump_adapter(model: Any, adapter_name: str, rank: int) -> bytes:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in
             get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
    return bytes(save(state, metadata={"format": "inhouse-lora", "rank": str(rank)}))


def dump_full(model: Any) -> bytes:
    """Every weight of a fully fine-tuned model; tied tensors are stored once and re-tied on load."""
    from safetensors.torch import save

    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().contiguous().cpu()
    return bytes(save(state, metadata={"format": "inhouse-full"}))


def load_full(model: Any, data: bytes) -> Any:
    from safetensors.torch import load

    missing, unexpected = model.load_state_dict(load(data), strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed" in k}
    if unexpected or set(missing) - tied:
        raise ValueError(f"weights do not fit the base model: missing {missing}, unexpected {unexpected}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def is_full(data: bytes) -> bool:
    return adapter_metadata(data).get("format") == "inhouse-full"


def header_is_full(head: bytes) -> bool:
    """From the first bytes of a safetensors file: full weights (True) or a LoRA adapter (False)."""
    (length,) = struct.unpack("<Q", head[:8])
    meta = json.loads(head[8 : 8 + length]).get("__metadata__", {})
    return bool(meta.get("format") == "inhouse-full")


def adapter_metadata(data: bytes) -> dict[str, str]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    meta: dict[str, str] = header.get("__metadata__", {})
    return meta


def load_adapter_state(data: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    state: dict[str, Any] = load(data)
    return state


def attach_adapter(model: Any, name: str, data: bytes) -> Any:
    """Add an adapter to a model (wrapping it in a PeftModel the first time); returns the PeftModel."""
    from peft import PeftModel, get_peft_model, set_peft_model_state_dict

    rank = int(adapter_metadata(data).get("rank", "8"))
    config = lora_config(rank)
    if isinstance(model, PeftModel):
        model.add_adapter(name, config)
    else:
        model = get_peft_model(model, config, adapter_name=name)
    set_peft_model_state_dict(model, load_adapter_state(data), adapter_name=name)
    return model
