"""Decode steps and prompts of Llama-family models without Hugging Face's per-module overhead: the same math as
its forward for one new token per row or one row's prompt, with the weights' products where this CPU runs them
fastest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

# The attribute of a cache layer that holds its key and value buffers (numpy) and the keys tensor last handed
# out: on the layer itself, so they go when the scheduler drops the cache.
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
    """One weight, kept for the two ways a step multiplies by it. `w` is the weight in the layout OpenBLAS
    multiplies a single row by fastest on this kind of CPU (measured: [in, out] for most, the Linear's own
    [out, in] for the tall down projection); `packed` is oneDNN's blocked copy, made on the first prefill or step
    of several rows (a GEMM on a few rows runs ~2-5x faster from it than from `w`)."""

    w: np.ndarray[Any, Any]
    in_out: bool  # w is [in, out] (else [out, in])
    packed: torch.Tensor | None = None

    def one(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """x [in] times the weight: [out]."""
        out: np.ndarray[Any, Any] = x @ self.w if self.in_out else self.w @ x
        return out

    def linear_weight(self) -> torch.Tensor:
        """The weight as a Linear holds it, [out, in] (a view)."""
        import torch

        w = torch.from_numpy(self.w)
        return w.t() if self.in_out else w


@dataclass
class _Layer:
    norm1: np.ndarray[Any, Any]
    qkv: _Product  # q, k and v side by side
    o: _Product
    norm2: np.ndarray[Any, Any]
    gate_up: _Product  # gate and up side by side
    down: _Product
    attn: Any  # the model's attention and MLP modules: their projections, read at each step, may have been
    mlp: Any  # wrapped for LoRA rows since


def _mm_rows() -> bool:
    import torch

    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(available) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class FastDecoder:
    """Decode steps and prefills for a model `supports` accepts. Built from the model's weights as they are when
    it is made; the model's Linear weights become views of the decoder's transposed copies (no second copy of
    them; the model's own forward, where it still runs, computes the same products)."""

    def __init__(self, model: Any) -> None:
        import numpy as np

        self.config = config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim ** -0.5
        self.intermediate = int(config.intermediate_size)
        self.packing = _mm_rows()
        inner = model.model
        self.embed = inner.embed_tokens.weight.detach()
        self.rotary = inner.rotary_emb
        half = self.head_dim // 2
        # For the rope: the halves' swap as column indices, the signs, and a per-head scale that
        # applies the attention scale to the queries (keys are cached unscaled).
        self._perm = np.concatenate((np.arange(half, self.head_dim), np.arange(half)))
        self._signs = np.concatenate((-np.ones(half, np.float32), np.ones(half, np.float32)))
        self._qk_scale = np.array([self.scale] * self.heads + [1.0] * self.kv_heads, np.float32)[:, None]
        self._lora_key: object = object()  # none read yet
        # Per layer: the LoRA rows of q, k, v, o, gate, up and down as numpy arrays (see _low_rank), or None.
        self._rows_np: list[tuple[Any, ...]] = []
        self.cos_np = self.sin_np = np.zeros((0, self.head_dim), np.float32)  # the rope's table (_rope_table)
        self.embed_np, self.norm_np = self.embed.numpy(), inner.norm.weight.detach().numpy()
        self.layers = [self._layer(layer) for layer in inner.layers]
        self.head = _Product(model.lm_head.weight.detach().t().contiguous().numpy(), True)

    def _layer(self, layer: Any) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        norm1, norm2 = layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()
        return _Layer(norm1.numpy(), self._fuse((attn.q_proj, attn.k_proj, attn.v_proj)),
                      self._fuse((attn.o_proj,)), norm2.numpy(), self._fuse((mlp.gate_proj, mlp.up_proj)),
                      self._fuse((mlp.down_proj,), in_out=False), attn, mlp)

    def _fuse(self, modules: Sequence[Any], in_out: bool = True) -> _Product:
        """One transposed weight for Linears that read the same input; each module's weight is then a view of
        its columns. in_out=False (one module): its weight as it is, [out, in]."""
        import torch

        linears = [getattr(m, "base", m) for m in modules]
        if not in_out:
            [lin] = linears
            return _Product(lin.weight.detach().numpy(), False)
        t = torch.cat([lin.weight.detach() for lin in linears]).t().contiguous()
        start = 0
        for lin in linears:
            width = lin.weight.shape[0]
            lin.weight.data = t[:, start:start + width].t()
            start += width
        return _Product(t.numpy(), True)

    def _rope_table(self, upto: int) -> None:
        """The rope's cos and sin for positions below `upto` at least, from the model's own rotary module (so
        any static rope matches), grown by doubling."""
        import torch

        size = max(upto, 2 * self.cos_np.shape[0], 1024)
        with torch.no_grad():
            cos, sin = self.rotary(self.embed[:1], torch.arange(size)[None])
        self.cos_np, self.sin_np = cos[0].contiguous().numpy(), sin[0].contiguous().numpy()

    def _mm(self, x: np.ndarray[Any, Any], w: _Product) -> np.ndarray[Any, Any]:
        """x [rows, in] times a weight: [rows, out]. One row: OpenBLAS (a product by a vector reads the weight at
        memory speed); several: oneDNN's packed copy (its GEMM on a few rows is the fastest here)."""
        import torch

        if x.shape[0] == 1:
            return w.one(x[0])[None]
        if not self.packing:
            out: np.ndarray[Any, Any] = x @ w.w if w.in_out else x @ w.w.T
            return out
        if w.packed is None:
            w.packed = torch.ops.mkldnn._reorder_linear_weight(w.linear_weight(), 8)
        y = torch.ops.mkldnn._linear_pointwise(torch.from_numpy(x), w.packed, None, "none", [], "")
        out = y.numpy()
        return out

    def _norm(self, x: np.ndarray[Any, Any], weight: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """RMS norm of each row of x [rows, hidden]."""
        import numpy as np

        if x.shape[0] == 1:
            r = np.float32(1.0 / np.sqrt(np.dot(x[0], x[0]) / x.shape[1] + self.eps))
            normed: np.ndarray[Any, Any] = weight * (x * r)
            return normed
        ms = np.einsum("ij,ij->i", x, x)[:, None] / np.float32(x.shape[1])
        normed = weight * (x / np.sqrt(ms + np.float32(self.eps)))
        return normed

    def _append(self, cached: Any, k: np.ndarray[Any, Any], v: np.ndarray[Any, Any]) -> tuple[Any, Any]:
        """Add columns to a layer's keys and values (`k`, `v`: [rows, kv heads, new columns, dim]); returns numpy
        views of both, [rows, kv heads, width, dim]. They are views of buffers with room to spare, so a step
        writes its column instead of copying the whole cache (as torch.cat would); when the scheduler has
        replaced the layer's tensors (rows joined or left), they are copied into new buffers first. In numpy:
        torch's indexing costs microseconds per call, 60 calls a step."""
        import numpy as np
        import torch

        buffers = getattr(cached, _BUFFERS, None)
        if not cached.is_initialized:  # a new cache's layer (Hugging Face's lazy initialisation)
            cached.lazy_initialization(torch.from_numpy(k), torch.from_numpy(v))
            cached.keys = cached.values = None
        width = 0 if cached.keys is None else cached.keys.shape[-2]
        new = k.shape[2]
        if buffers is None or buffers[2] is not cached.keys or buffers[0].shape[2] < width + new:
            rows, kv, _, dim = k.shape
            room = width + new + max(64, (width + new) // 2)
            kb = np.empty((rows, kv, room, dim), np.float32)
            vb = np.empty((rows, kv, room, dim), np.float32)
            if width:
                kb[:, :, :width] = cached.keys.numpy()
                vb[:, :, :width] = cached.values.numpy()
        else:
            kb, vb = buffers[0], buffers[1]
        kb[:, :, width:width + new] = k
        vb[:, :, width:width + new] = v
        keys, values = kb[:, :, :width + new], vb[:, :, :width + new]
        cached.keys, cached.values = torch.from_numpy(keys), torch.from_numpy(values)
        setattr(cached, _BUFFERS, (kb, vb, cached.keys))
        return keys, values

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

    def _rope(self, positions: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """cos and sin [len(positions), heads + kv heads, dim] such that rope(x) = x * cos + x[..., perm] * sin
        (rotate_half(x) is x[perm] * signs), with the attention scale applied to the queries' rows."""
        top = int(positions.max()) + 1
        if top > self.cos_np.shape[0]:
            self._rope_table(top)
        cos = self._qk_scale * self.cos_np[positions][:, None]
        sin = self._qk_scale * (self.sin_np[positions] * self._signs)[:, None]
        return cos, sin

    def _layers(self, x: np.ndarray[Any, Any], cos: np.ndarray[Any, Any], sin: np.ndarray[Any, Any], cache: Any,
                attend: Callable[[np.ndarray[Any, Any], np.ndarray[Any, Any], Any], np.ndarray[Any, Any]]
                ) -> np.ndarray[Any, Any]:
        """The decoder layers over x [n, hidden] (n rows of one token, or one row's n tokens: `attend` knows
        which): attend(queries and keys [n, heads + kv heads, dim] roped, values [n, kv heads, dim], the layer's
        cache) appends the keys and values and returns the attention's output [n, heads * dim]."""
        import numpy as np

        n, heads, kv, dim = x.shape[0], self.heads, self.kv_heads, self.head_dim
        inter, k_end = self.intermediate, (heads + kv) * dim
        perm = self._perm
        for layer, cached, lora in zip(self.layers, cache.layers, self._rows_np, strict=True):
            h = self._norm(x, layer.norm1)
            qkv = self._mm(h, layer.qkv)
            if lora[0] is not None or lora[1] is not None or lora[2] is not None:
                for r, lo, hi in ((lora[0], 0, heads * dim), (lora[1], heads * dim, k_end), (lora[2], k_end, None)):
                    if r is not None:
                        qkv[:, lo:hi] += _low_rank(h, r)
            qk = qkv[:, :k_end].reshape(n, heads + kv, dim)
            a = attend(qk * cos + qk[:, :, perm] * sin, qkv[:, k_end:].reshape(n, kv, dim), cached)
            out = self._mm(a, layer.o)
            if lora[3] is not None:
                out += _low_rank(a, lora[3])
            x += out  # x is the layers' own copy (embedding rows taken by index)
            h = self._norm(x, layer.norm2)
            gu = self._mm(h, layer.gate_up)
            if lora[4] is not None:
                gu[:, :inter] += _low_rank(h, lora[4])
            if lora[5] is not None:
                gu[:, inter:] += _low_rank(h, lora[5])
            g = gu[:, :inter]
            a = g / (np.float32(1.0) + np.exp(-g)) * gu[:, inter:]
            out = self._mm(a, layer.down)
            if lora[6] is not None:
                out += _low_rank(a, lora[6])
            x += out
        return x

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
             cache: Any, lora_key: object) -> torch.Tensor:
        """One new token per row: `tokens` and `positions` [rows], `mask` [rows, cache width + 1] (1 for columns
        the row attends to, None: all) and the rows' DynamicCache, which grows by one column. Returns the
        logits [rows, vocab] (float32). The LoRA rows the model's wrapped modules hold apply; `lora_key`
        changes whenever they do.

        In numpy but for several rows' weight products: its operations on a few rows' small arrays cost a
        microsecond or two each, where torch's cost several (and wake its thread pool)."""
        import numpy as np
        import torch

        rows, heads, kv, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        self._refresh(lora_key)
        cos, sin = self._rope(positions.numpy())
        bias = None
        if mask is not None and not bool(mask.all()):
            bias = np.where(mask.numpy() == 0, np.finfo(np.float32).min, np.float32(0.0))[:, None, None, :]

        def attend(qk: np.ndarray[Any, Any], v: np.ndarray[Any, Any], cached: Any) -> np.ndarray[Any, Any]:
            keys, values = self._append(cached, qk[:, heads:, None], v[:, :, None])  # [rows, kv, width, dim]
            scores = np.matmul(qk[:, :heads].reshape(rows, kv, heads // kv, dim), keys.transpose(0, 1, 3, 2))
            a = _softmax_times(scores, bias, values)
            return a.reshape(rows, heads * dim)

        x = self._layers(self.embed_np[tokens.numpy()], cos, sin, cache, attend)
        return torch.from_numpy(self._mm(self._norm(x, self.norm_np), self.head))

    def prefill(self, tokens: torch.Tensor, cache: Any, lora_key: object) -> tuple[torch.Tensor, Any]:
        """One row's prompt (or its next chunk): `tokens` [n], at the positions after the cache's (None: a new
        DynamicCache); returns the last token's logits [1, vocab] and the cache, n columns wider. The n tokens
        make one n-row product per weight (oneDNN's, ~2x Hugging Face's forward here), causal attention."""
        import numpy as np
        import torch
        from transformers import DynamicCache

        n, heads, kv, dim = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        group = heads // kv
        if cache is None:
            cache = DynamicCache(config=self.config)
        width = cache.get_seq_length()
        self._refresh(lora_key)
        cos, sin = self._rope(np.arange(width, width + n))
        # Token t (at width + t) sees the cache and the prompt up to itself.
        bias = np.where(np.arange(width + n)[None] > np.arange(width, width + n)[:, None],
                        np.finfo(np.float32).min, np.float32(0.0)).astype(np.float32)

        def attend(qk: np.ndarray[Any, Any], v: np.ndarray[Any, Any], cached: Any) -> np.ndarray[Any, Any]:
            keys, values = self._append(cached, qk[None, :, heads:].transpose(0, 2, 1, 3),
                                        v[None].transpose(0, 2, 1, 3))  # [1, kv, width + n, dim]
            q = qk[:, :heads].reshape(n, kv, group, dim).transpose(1, 2, 0, 3)  # [kv, group, n, dim]
            scores = np.matmul(q, keys[0][:, None].transpose(0, 1, 3, 2))  # [kv, group, n, width + n]
            a = _softmax_times(scores, bias, values[0][:, None])  # [kv, group, n, dim]
            return a.transpose(2, 0, 1, 3).reshape(n, heads * dim)

        x = self._layers(self.embed_np[tokens.numpy()], cos, sin, cache, attend)
        return torch.from_numpy(self._mm(self._norm(x[-1:], self.norm_np), self.head)), cache


def _softmax_times(scores: np.ndarray[Any, Any], bias: np.ndarray[Any, Any] | None,
                   values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """softmax(scores + bias) @ values, over the last axis of scores (changed in place); the normalisation is
    applied to the product (fewer numbers than the scores)."""
    import numpy as np

    if bias is not None:
        scores += bias
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    out: np.ndarray[Any, Any] = np.matmul(scores, values)
    out /= scores.sum(axis=-1, keepdims=True)
    return out


def _low_rank(x: np.ndarray[Any, Any], rows: tuple[Any, Any, Any]) -> np.ndarray[Any, Any]:
    """The rows' low-rank updates of one wrapped module, as multi_lora's LoRALinear computes them: `x` is [n, in]
    (n rows, or one row's n tokens); `rows` is (down, up, and each row's mask of its block in a bank [rows, bank],
    or None). In numpy: these products are small, and torch's would wake its thread pool for each."""
    down, up, mask = rows
    low = x @ down
    if mask is not None:
        low = low * mask  # [rows, bank]: each row's block (one row of a prompt's tokens: broadcast)
    out: np.ndarray[Any, Any] = low @ up
    return out
