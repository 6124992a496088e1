"""The onnxruntime backend: export the encoder once (cached in the data dir), fuse it, run it without spinning."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from inhouse.engines.embeddings.encoder import EncoderSpec, FloatArray, pool
from inhouse.engines.embeddings.hf import HfTokenizer

log = logging.getLogger(__name__)

# Model families onnxruntime's transformer optimizer can fuse (attention, layer norm, gelu).
_FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "mpnet": "bert"}
_FORMAT = "v2"  # bump when the export recipe (or this key) changes, so old caches are not reused


def cache_key(spec: EncoderSpec) -> str:
    """Names the export of one directory's current files. The directory itself is part of the key: two
    fine-tunes of one base have files of the same names and sizes, written in the same second."""
    h = hashlib.sha256(_FORMAT.encode())
    h.update(str(spec.path.resolve()).encode())
    for name in sorted(os.listdir(spec.path)):
        p = spec.path / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def export(spec: EncoderSpec, target: Path) -> Path:
    """Export the encoder's last hidden state to ONNX, fused where the family allows; atomic rename."""
    import torch
    from transformers import AutoModel

    target.mkdir(parents=True, exist_ok=True)
    raw = target / "model.raw.onnx"
    final = target / "model.onnx"
    # Eager attention exports as plain ops that the optimizer recognises and fuses into Attention.
    model = AutoModel.from_pretrained(
        str(spec.path), local_files_only=True, use_safetensors=True, attn_implementation="eager"
    ).eval()
    types = int(getattr(model.config, "type_vocab_size", 0) or 0) > 0
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.int64)
    args = tuple(sample if n != "token_type_ids" else torch.zeros_like(sample) for n in names)
    dyn = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    # The tracer warns about Python control flow in the model's code; those branches are shape checks that
    # hold for every input we feed (batch x seq ids), so the warnings are expected noise here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(), args, str(raw), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=dyn, opset_version=17, dynamo=False)
    fused = False
    family = _FUSABLE.get(spec.model_type)
    if family and spec.num_heads and spec.hidden_size:
        try:
            from onnxruntime.transformers import optimizer

            opt = optimizer.optimize_model(str(raw), model_type=family, num_heads=spec.num_heads,
                                           hidden_size=spec.hidden_size, opt_level=1)
            tmp = target / "model.fused.tmp"
            opt.save_model_to_file(str(tmp))
            os.replace(tmp, final)
            fused = True
        except Exception:  # fusion is an optimisation; the plain export still serves
            log.warning("onnx fusion failed for %s; using the plain export", spec.path, exc_info=True)
    if not fused:
        os.replace(raw, final)
    else:
        raw.unlink(missing_ok=True)
    (target / SOURCE).write_text(str(spec.path.resolve()))
    return final


SOURCE = "source"  # the model directory an export was made from


def remove_orphan_exports(cache_dir: Path) -> int:
    """Remove exports whose model directory is gone (a fine-tune swept from the cache). Exports without a
    SOURCE (made before it existed) are kept."""
    import shutil

    root = cache_dir / "onnx"
    removed = 0
    if root.is_dir():
        for d in root.iterdir():
            source = d / SOURCE
            if source.is_file() and not Path(source.read_text()).exists():
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    return removed


class OnnxEncoder:
    backend = "onnx"

    def __init__(self, spec: EncoderSpec, threads: int, cache_dir: Path) -> None:
        import onnxruntime as ort

        self.spec = spec
        self._hf = HfTokenizer(spec)
        target = cache_dir / "onnx" / cache_key(spec)
        path = target / "model.onnx"
        if not path.exists():
            log.info("exporting %s to ONNX (once; cached in %s)", spec.path, target)
            export(spec, target)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads steal the cores from everything else on a small shared box.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self._hf.tokenize(texts)

    def window(self, ids: list[int]) -> list[int]:
        return self._hf.window(ids)

    def forward(self, windows: list[list[int]]) -> FloatArray:
        ids, mask = self._hf.pad(windows)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: feed[k] for k in self._inputs})[0]
        return pool(hidden, mask, self.spec.pooling)

    def close(self) -> None:
        del self.session
