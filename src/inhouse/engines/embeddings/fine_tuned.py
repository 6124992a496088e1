"""A fine-tuned embedding model on disk: the base model's directory with the fine-tune's weights in place of
the base's, so every encoder backend (and the ONNX export) loads it exactly as it loads a configured model."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

WEIGHTS = "model.safetensors"
ARTIFACT = ".inhouse-artifact"  # names the blob the weights came from, so a sweep can tell when it is gone
# Weight files of the base that must not sit beside the fine-tune's (a loader could pick either).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".gguf")
_WEIGHT_DIRS = {"onnx", "openvino"}


def _skip(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n.endswith(_WEIGHT_SUFFIXES) or n in _WEIGHT_DIRS
            or (n.startswith(".") and os.path.isdir(os.path.join(directory, n)))}


def write_model_dir(base: Path, weights: bytes, target: Path, artifact: str = "") -> Path:
    """Materialise the model at `target` once (`artifact`: the weights' blob key, kept beside them). Built in
    a sibling temp directory and renamed into place, so a reader (another request, another process) sees a
    whole model or none; a target that exists is the same model (its name is derived from the weights' blob
    key) and is reused."""
    if (target / WEIGHTS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        shutil.copytree(base, temp, ignore=_skip, symlinks=False)
        (temp / ARTIFACT).write_text(artifact)
        with open(temp / WEIGHTS, "wb") as f:
            f.write(weights)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(temp, target)
        except OSError:
            if not (target / WEIGHTS).is_file():  # not a racing writer that won: a real failure
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


def cached_models(root: Path, temp_age_s: float) -> list[tuple[Path, str | None]]:
    """(directory, artifact blob key or None) of each model under `root`; a temp directory of a writer that
    died (older than temp_age_s) is listed with None. A live writer's temp is never listed."""
    import time

    out: list[tuple[Path, str | None]] = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        if not d.is_dir():
            continue
        if d.name.startswith("."):
            if time.time() - d.stat().st_mtime > temp_age_s:
                out.append((d, None))
            continue
        marker = d / ARTIFACT
        out.append((d, marker.read_text() if marker.is_file() else None))
    return out
