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
    for path, pair in parts.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise ValueError(f"adapter module {path} lacks lora_A or lora_B")
        down = pair["lora_A"].to(dtype).t().contiguous()
        up = (pair["lora_B"].to(dtype) * scale).t().contiguous()
        modules[path] = (down, up)
    return Adapter(modules, rank)


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
            # (down, up, mask) from Rows.apply: one adapter on every row (mask None), or a bank of several and
            # the mask of each row's block; None: the base alone.
            self.rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = self.base(x)
            if self.rows is None:
                return y
            down, up, mask = self.rows
            if mask is None:
                return y + (x @ down) @ up
            return y + ((x @ down) * mask) @ up

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


class Rows:
    """Sets the wrapped modules' per-row adapters for each batch.

    Per module, the distinct adapters in use are concatenated once (a bank: `down` [in, K*rank], `up`
    [K*rank, out]) and rebuilt only when that set changes. A step then computes every adapter's down product
    for every row in one product, keeps each row's own block with a 0/1 mask ([rows, 1, K*rank], the same for
    every module, rebuilt when the rows change) and applies `up` in one more product: the rows' updates in
    four operations per module, whatever the mix."""

    def __init__(self) -> None:
        self._adapters: list[Adapter] = []  # the bank's adapters, in bank order
        self._rank = 0
        self._banks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def reset(self) -> None:
        """Forget the banks (modules were wrapped since: their banks must be built)."""
        self._adapters, self._banks = [], {}

    def apply(self, wrappers: dict[str, Any], rows: Sequence[Adapter | None]) -> None:
        """Give every wrapped module the adapters of the batch's rows, in row order (None: the base model).
        A batch without any adapter runs the base model alone, at its own cost; one adapter on every row runs
        it as one product."""

        if all(a is None for a in rows):
            for w in wrappers.values():
                w.rows = None
            return
        if all(a is rows[0] for a in rows):  # one adapter on every row (a prefill, or one model's users)
            only = rows[0]
            assert only is not None
            for path, w in wrappers.items():
                pair = only.modules.get(path)
                w.rows = None if pair is None else (*pair, None)
            return
        distinct = list({id(a): a for a in rows if a is not None}.values())
        if any(all(a is not b for b in self._adapters) for a in distinct):
            self._build(wrappers, distinct)
        first = next(iter(self._banks.values()))[0]
        mask = first.new_zeros((len(rows), 1, len(self._adapters) * self._rank))
        for i, a in enumerate(rows):
            if a is not None:
                k = next(k for k, b in enumerate(self._adapters) if b is a)
                mask[i, 0, k * self._rank:(k + 1) * self._rank] = 1
        for path, w in wrappers.items():
            w.rows = (*self._banks[path], mask)

    def _build(self, wrappers: dict[str, Any], adapters: list[Adapter]) -> None:
        import torch

        rank = max(a.rank for a in adapters)
        self._adapters, self._rank, self._banks = adapters, rank, {}
        for path, w in wrappers.items():
            weight = w.base.weight  # [out, in]
            downs, ups = [], []
            for a in adapters:
                down, up = a.modules.get(path) or (weight.new_zeros((weight.shape[1], 0)),
                                                   weight.new_zeros((0, weight.shape[0])))
                # A lower rank (or no update) is padded with zeros: the product is the same.
                downs.append(torch.nn.functional.pad(down, (0, rank - down.shape[1])))
                ups.append(torch.nn.functional.pad(up, (0, 0, 0, rank - up.shape[0])))
            self._banks[path] = (torch.cat(downs, dim=1), torch.cat(ups, dim=0))
