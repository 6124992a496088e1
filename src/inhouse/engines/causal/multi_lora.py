"""LoRA adapters applied per batch row: one forward pass serves rows of the base model and of several adapters
of it at once, each row with its own adapter (or none), as peft would compute each alone."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inhouse.engines.causal.adapters import LORA_ALPHA_PER_RANK, adapter_metadata, load_adapter_state

if TYPE_CHECKING:
    import torch

_PREFIX = "base_model.model."  # peft's name for the wrapped model, before the base model's own module path


@dataclass(frozen=True)
class Adapter:
    """One adapter's weights per module path of the base model, ready for a batched product: `down` is
    lora_A transposed ([in, rank]) and `up` is lora_B transposed times lora_alpha / rank ([rank, out]).

    The scale is LORA_ALPHA_PER_RANK (2), a power of two, so folding it into `up` changes no bit of the
    result: x @ down @ up equals peft's lora_B(lora_A(x)) * scaling up to the order of float additions."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int
    nbytes: int


def parse(data: bytes, dtype: Any) -> Adapter:
    """An adapter file (adapters.dump_adapter) as per-module weights; ValueError if it is not one."""
    meta = adapter_metadata(data)
    rank = int(meta.get("rank", "8"))
    scale = float(LORA_ALPHA_PER_RANK)  # lora_alpha / rank, as adapters.lora_config sets it
    state = load_adapter_state(data)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for kind in ("lora_A", "lora_B"):
            marker = f".{kind}."
            if marker in key:
                path = key.split(marker)[0].removeprefix(_PREFIX)
                parts.setdefault(path, {})[kind] = tensor
                break
        else:
            raise ValueError(f"not a LoRA adapter tensor: {key}")
    modules = {}
    nbytes = 0
    for path, pair in parts.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise ValueError(f"adapter module {path} lacks lora_A or lora_B")
        down = pair["lora_A"].to(dtype).t().contiguous()
        up = (pair["lora_B"].to(dtype) * scale).t().contiguous()
        modules[path] = (down, up)
        nbytes += down.numel() * down.element_size() + up.numel() * up.element_size()
    return Adapter(modules, rank, nbytes)


def check(model: Any, adapter: Adapter) -> None:
    """ValueError unless every module the adapter changes is a Linear of `model` (or one wrapped already)
    whose shape fits the adapter's."""
    import torch

    for path, (down, up) in adapter.modules.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"the adapter changes {path}, which the model does not have") from None
        base = getattr(module, "base", module)
        if not isinstance(base, torch.nn.Linear) or tuple(base.weight.shape) != (up.shape[1], down.shape[0]):
            raise ValueError(f"the adapter's {path} does not fit the model's")


@functools.cache
def _lora_linear() -> type:
    """The module type that stands in for a wrapped Linear (made on first use: torch is imported lazily)."""
    import torch

    class LoRALinear(torch.nn.Module):
        """A base Linear plus, when `rows` is set, each row's own low-rank update (rows without an adapter get
        zeros). Holds no weights of its own, only the batch's."""

        def __init__(self, base: torch.nn.Linear) -> None:
            super().__init__()
            self.base = base
            # ([rows, in, rank], [rows, rank, out]) for a batch of several adapters, ([in, rank], [rank, out]) for
            # one adapter on every row, or None: the base alone.
            self.rows: tuple[torch.Tensor, torch.Tensor] | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = self.base(x)
            if self.rows is None:
                return y
            down, up = self.rows
            if down.dim() == 2:
                return y + (x @ down) @ up
            return y + torch.bmm(torch.bmm(x, down), up)

    return LoRALinear


def wrap(model: Any, paths: Sequence[str]) -> dict[str, Any]:
    """Replace the Linear at each module path of `model` by a LoRALinear (once); the wrappers by path."""
    import torch

    out: dict[str, Any] = {}
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        current = getattr(parent, name)
        if not isinstance(current, torch.nn.Linear):
            if hasattr(current, "rows"):  # wrapped already
                out[path] = current
                continue
            raise ValueError(f"adapter module {path} is not a Linear of the base model")
        wrapper = _lora_linear()(current)
        setattr(parent, name, wrapper)
        out[path] = wrapper
    return out


def set_rows(wrappers: dict[str, Any], rows: Sequence[Adapter | None]) -> None:
    """Give every wrapped module the adapters of the batch's rows, in row order (None: the base model).

    A batch without any adapter runs the base model alone, at its own cost."""
    import torch

    if all(a is None for a in rows):
        for w in wrappers.values():
            w.rows = None
        return
    if all(a is rows[0] for a in rows):  # one adapter on every row (a prefill, or one model's users)
        only = rows[0]
        assert only is not None
        for path, w in wrappers.items():
            w.rows = only.modules.get(path)
        return
    rank = max(a.rank for a in rows if a is not None)
    for path, w in wrappers.items():
        base = w.base.weight  # [out, in]
        down = torch.zeros((len(rows), base.shape[1], rank), dtype=base.dtype)
        up = torch.zeros((len(rows), rank, base.shape[0]), dtype=base.dtype)
        for i, adapter in enumerate(rows):
            pair = adapter.modules.get(path) if adapter is not None else None
            if pair is not None:
                down[i, :, : pair[0].shape[1]] = pair[0]
                up[i, : pair[1].shape[0]] = pair[1]
        w.rows = (down, up)
