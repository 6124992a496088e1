"""Decode steps of Llama-family models without Hugging Face's per-module overhead: the same math as its forward
for one new token per row, with the weights' products where this CPU runs them fastest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

# The attribute of a cache layer that holds its key and value buffers, the keys view last handed out and the
# buffers' numpy views: on the layer itself, so they go when the scheduler drops the cache.
_BUFFERS = "_inhouse_buffers"
# Rope variants whose table depends on the position alone (a dynamic one changes with the sequence's length).
_STATIC_ROPE = ("default", "linear", "llama3")


def supports(model: Any) -> bool:
    """Whether `model` is one this decoder computes exactly as Hugging Face's forward does: a float32 Llama
    (SmolLM2 and the like) without biases, sliding windows or a dynamic rope."""
    import torch

    config = model.config
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
    return (
        getattr(config, "model_type", None) == "llama"
        and type(model).__name__ == "LlamaForCausalLM"
        and model.dtype == torch.float32
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "hidden_act", None) == "silu"
        and getattr(config, "pretraining_tp", 1) == 1
        and rope.get("rope_type", "default") in _STATIC_ROPE
    )


@dataclass
class _Product:
    """One weight, kept for the two ways a step multiplies by it: `t` is the weight transposed ([in, out],
    contiguous, which OpenBLAS multiplies a single row by at memory speed); `packed` is oneDNN's blocked copy
    of it, made on the first step of several rows (a GEMM on a few rows runs ~2-5x faster from it than from `t`)."""

    t: np.ndarray[Any, Any]
    packed: torch.Tensor | None = None


@dataclass
class _Layer:
    norm1: torch.Tensor
    norm1_np: np.ndarray[Any, Any]
    qkv: _Product  # q, k and v side by side
    o: _Product
    norm2: torch.Tensor
    norm2_np: np.ndarray[Any, Any]
    gate_up: _Product  # gate and up side by side
    down: _Product
    attn: Any  # the model's attention and MLP modules: their projections, read at each step, may have been
    mlp: Any  # wrapped for LoRA rows since


def _mm_rows() -> bool:
    import torch

    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(available) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class FastDecoder:
    """Decode steps for a model `supports` accepts. Built from the model's weights as they are when it is made;
    the model's Linear weights become views of the decoder's transposed copies (no second copy of them; the
    model's own forward, for prefills, computes the same products)."""

    def __init__(self, model: Any) -> None:
        import torch

        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim ** -0.5
        self.intermediate = int(config.intermediate_size)
        self.packing = _mm_rows()
        inner = model.model
        self.embed = inner.embed_tokens.weight.detach()
        self.norm = inner.norm.weight.detach()
        self.rotary = inner.rotary_emb
        half = self.head_dim // 2
        self.sign = torch.cat([self.embed.new_full((half,), -1.0), self.embed.new_ones((half,))])
        self._lora_key: object = object()  # none read yet
        # Per layer: the LoRA rows of q, k, v, o, gate, up and down as numpy arrays (see _low_rank), or None.
        self._rows_np: list[tuple[Any, ...]] = []
        self.cos = self.sin = self.embed.new_zeros((0, self.head_dim))
        self.cos_np, self.sin_np = self.cos.numpy(), self.sin.numpy()
        self.embed_np, self.norm_np = self.embed.numpy(), self.norm.numpy()
        self.layers = [self._layer(layer) for layer in inner.layers]
        self.head = _Product(model.lm_head.weight.detach().t().contiguous().numpy())

    def _layer(self, layer: Any) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        norm1, norm2 = layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()
        return _Layer(norm1, norm1.numpy(), self._fuse((attn.q_proj, attn.k_proj, attn.v_proj)),
                      self._fuse((attn.o_proj,)), norm2, norm2.numpy(), self._fuse((mlp.gate_proj, mlp.up_proj)),
                      self._fuse((mlp.down_proj,)), attn, mlp)

    def _fuse(self, modules: Sequence[Any]) -> _Product:
        """One transposed weight for Linears that read the same input; each module's weight is then a view of
        its columns."""
        import torch

        linears = [getattr(m, "base", m) for m in modules]
        t = torch.cat([lin.weight.detach() for lin in linears]).t().contiguous()
        start = 0
        for lin in linears:
            width = lin.weight.shape[0]
            lin.weight.data = t[:, start:start + width].t()
            start += width
        return _Product(t.numpy())

    def _rope_table(self, upto: int) -> None:
        """The rope's cos and sin for positions below `upto` at least, from the model's own rotary module (so
        any static rope matches), grown by doubling."""
        import torch

        size = max(upto, 2 * self.cos.shape[0], 1024)
        with torch.no_grad():
            cos, sin = self.rotary(self.embed[:1], torch.arange(size)[None])
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        self.cos_np, self.sin_np = self.cos.numpy(), self.sin.numpy()

    def _mm(self, x: torch.Tensor, w: _Product) -> torch.Tensor:
        import numpy as np
        import torch

        if x.shape[0] == 1 or not self.packing:
            return torch.from_numpy(np.matmul(x.numpy(), w.t))
        if w.packed is None:
            w.packed = torch.ops.mkldnn._reorder_linear_weight(torch.from_numpy(w.t).t(), 8)
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, w.packed, None, "none", [], "")
        return out

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        import torch

        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # Hugging Face's rotate_half(x) is (-second half, first half): the halves swapped, then signed.
        half = self.head_dim // 2
        turned = x.view(*x.shape[:-1], 2, half).flip(-2).flatten(-2) * self.sign
        out: torch.Tensor = x * cos + turned * sin
        return out

    def _append(self, cached: Any, k: torch.Tensor, v: torch.Tensor) -> tuple[Any, Any]:
        """Add a column to a layer's keys and values; returns the numpy views of both. They are views of a buffer
        with room to spare, so a step writes one column instead of copying the whole cache (as torch.cat would);
        when the scheduler has replaced them (rows joined or left), they are copied into a new buffer first."""
        buffers = getattr(cached, _BUFFERS, None)
        width = cached.keys.shape[-2]
        if buffers is None or buffers[2] is not cached.keys or buffers[0].shape[-2] <= width:
            rows, kv, _, dim = cached.keys.shape
            room = width + max(64, width // 2)
            kb = cached.keys.new_empty((rows, kv, room, dim))
            vb = cached.values.new_empty((rows, kv, room, dim))
            kb[:, :, :width] = cached.keys
            vb[:, :, :width] = cached.values
            buffers = (kb, vb, cached.keys, kb.numpy(), vb.numpy())
        kb, vb = buffers[0], buffers[1]
        kb[:, :, width] = k
        vb[:, :, width] = v
        cached.keys, cached.values = kb[:, :, :width + 1], vb[:, :, :width + 1]
        setattr(cached, _BUFFERS, (kb, vb, cached.keys, buffers[3], buffers[4]))
        return buffers[3][:, :, :width + 1], buffers[4][:, :, :width + 1]

    def _refresh(self, lora_key: object) -> None:
        """Read the LoRA rows the model's wrapped modules hold (they change only with the batch's adapters)."""
        if lora_key == self._lora_key:
            return
        self._lora_key = lora_key
        self._rows_np = []
        for layer in self.layers:
            a, m = layer.attn, layer.mlp
            modules = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
            rows = (getattr(module, "rows", None) for module in modules)
            self._rows_np.append(tuple(None if r is None else (r[0].numpy(), r[1].numpy(),
                                                               None if r[2] is None else r[2].numpy()[:, 0])
                                       for r in rows))

    def _one(self, token: int, position: int, cache: Any) -> torch.Tensor:
        """`step` for a single row, in numpy: its operations on one row's small arrays cost a microsecond or two
        each, where torch's cost several (and wake its thread pool)."""
        import numpy as np
        import torch

        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        group, half, inter = heads // kv, dim // 2, self.intermediate
        q_end, k_end = heads * dim, (heads + kv) * dim
        eps, scale, one = self.eps, np.float32(self.scale), np.float32(1.0)
        x = self.embed_np[token].copy()
        cos, sin = self.cos_np[position], self.sin_np[position]
        for layer, cached, lora in zip(self.layers, cache.layers, self._rows_np, strict=True):
            h = layer.norm1_np * (x * np.float32(1.0 / np.sqrt(np.dot(x, x) / x.shape[0] + eps)))
            qkv = h @ layer.qkv.t
            if lora[0] is not None or lora[1] is not None or lora[2] is not None:
                for r, lo, hi in ((lora[0], 0, q_end), (lora[1], q_end, k_end), (lora[2], k_end, None)):
                    if r is not None:
                        qkv[lo:hi] += _low_rank(h, r)
            qk = qkv[:k_end].reshape(heads + kv, dim)
            qk = qk * cos + np.concatenate((-qk[:, half:], qk[:, :half]), axis=1) * sin
            keys, values = self._append(cached, torch.from_numpy(qk[heads:]),
                                        torch.from_numpy(qkv[k_end:].reshape(kv, dim)))
            scores = np.matmul(qk[:heads].reshape(kv, group, dim), keys[0].transpose(0, 2, 1))
            scores *= scale
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            a = np.matmul(scores, values[0]).reshape(heads * dim)
            out = a @ layer.o.t
            if lora[3] is not None:
                out += _low_rank(a, lora[3])
            x = x + out
            h = layer.norm2_np * (x * np.float32(1.0 / np.sqrt(np.dot(x, x) / x.shape[0] + eps)))
            gu = h @ layer.gate_up.t
            if lora[4] is not None:
                gu[:inter] += _low_rank(h, lora[4])
            if lora[5] is not None:
                gu[inter:] += _low_rank(h, lora[5])
            g = gu[:inter]
            a = g / (one + np.exp(-g)) * gu[inter:]
            out = a @ layer.down.t
            if lora[6] is not None:
                out += _low_rank(a, lora[6])
            x = x + out
        x = self.norm_np * (x * np.float32(1.0 / np.sqrt(np.dot(x, x) / x.shape[0] + eps)))
        return torch.from_numpy(x @ self.head.t)[None]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
             cache: Any, lora_key: object) -> torch.Tensor:
        """One new token per row: `tokens` and `positions` [rows], `mask` [rows, cache width + 1] (1 for columns
        the row attends to, None: all) and the rows' DynamicCache, which grows by one column. Returns the
        logits [rows, vocab] (float32). The LoRA rows the model's wrapped modules hold apply; `lora_key`
        changes whenever they do."""
        import torch

        rows, heads, kv, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        group = heads // kv
        top = int(positions.max()) + 1
        if top > self.cos.shape[0]:
            self._rope_table(top)
        self._refresh(lora_key)
        if rows == 1 and (mask is None or bool(mask.all())):
            return self._one(int(tokens[0]), int(positions[0]), cache)
        x = self.embed[tokens]
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill_(mask == 0, torch.finfo(x.dtype).min)
            bias = bias[:, None, None, :]
        for layer, cached, lora in zip(self.layers, cache.layers, self._rows_np, strict=True):
            q_mod, k_mod, v_mod, o_mod, gate_mod, up_mod, down_mod = lora
            h = self._norm(x, layer.norm1)
            qkv = self._mm(h, layer.qkv)
            for module, start, width in ((q_mod, 0, heads * dim), (k_mod, heads * dim, kv * dim),
                                         (v_mod, (heads + kv) * dim, kv * dim)):
                if module is not None:
                    qkv[:, start:start + width] += _low_rank_t(h, module)
            qk = self._rope(qkv[:, :(heads + kv) * dim].view(rows, heads + kv, dim), cos, sin)
            q = qk[:, :heads].reshape(rows, kv, group, dim)
            self._append(cached, qk[:, heads:], qkv[:, (heads + kv) * dim:].view(rows, kv, dim))
            scores = torch.matmul(q, cached.keys.transpose(-1, -2)) * self.scale  # [rows, kv, group, width]
            if bias is not None:
                scores = scores + bias
            attn = torch.matmul(torch.softmax(scores, dim=-1), cached.values).reshape(rows, heads * dim)
            out = self._mm(attn, layer.o)
            x = x + (out if o_mod is None else out + _low_rank_t(attn, o_mod))
            h = self._norm(x, layer.norm2)
            gu = self._mm(h, layer.gate_up)
            for module, start in ((gate_mod, 0), (up_mod, self.intermediate)):
                if module is not None:
                    gu[:, start:start + self.intermediate] += _low_rank_t(h, module)
            a = torch.nn.functional.silu(gu[:, :self.intermediate]) * gu[:, self.intermediate:]
            out = self._mm(a, layer.down)
            x = x + (out if down_mod is None else out + _low_rank_t(a, down_mod))
        return self._mm(self._norm(x, self.norm), self.head)


def _low_rank(x: np.ndarray[Any, Any], rows: tuple[Any, Any, Any]) -> np.ndarray[Any, Any]:
    """The rows' low-rank updates of one wrapped module, as multi_lora's LoRALinear computes them: `x` is one row
    ([in]) or several ([rows, in]); `rows` is (down, up, and each row's mask of its block in a bank [rows, bank],
    or None). In numpy: these products are small, and torch's would wake its thread pool for each."""
    down, up, mask = rows
    low = x @ down
    if mask is not None:
        low = low * mask.reshape(low.shape)
    out: np.ndarray[Any, Any] = low @ up
    return out


def _low_rank_t(x: torch.Tensor, rows: tuple[Any, Any, Any]) -> torch.Tensor:
    import torch

    return torch.from_numpy(_low_rank(x.numpy(), rows))
