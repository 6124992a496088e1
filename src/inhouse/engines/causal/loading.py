"""Find a chat model's safetensors directory (converting a packaged GGUF once) and load it."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inhouse.config import ModelEntry
from inhouse.engines.locate import require_model

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One converter at a time across processes (server and worker may both ask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert_gguf(source_dir: Path, gguf_file: str, target: Path) -> None:
    """De-quantise a GGUF into an ordinary transformers model saved as safetensors (transformers shows a
    progress bar while it converts). Written beside the target, then renamed into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".converting")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting %s/%s to safetensors in %s (once)", source_dir, gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(str(source_dir), gguf_file=gguf_file)
    model: Any = AutoModelForCausalLM.from_pretrained(str(source_dir), gguf_file=gguf_file)
    # The weights are plain float tensors now; drop the GGUF marker so it saves as an ordinary model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, target)


def model_dir(entry: ModelEntry, models_dir: Path) -> Path:
    source = require_model(entry)
    if entry.gguf_file is None:
        return source
    target = models_dir / entry.id
    if not (target / "config.json").exists():
        with _file_lock(models_dir / f".{entry.id}.lock"):
            if not (target / "config.json").exists():
                convert_gguf(source, entry.gguf_file, target)
    return target


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, threads: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads or os.cpu_count() or 1)
    # safetensors only: a directory with only pickled weights is refused, never unpickled.
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                                      dtype=torch.float32)
    return model.eval()
