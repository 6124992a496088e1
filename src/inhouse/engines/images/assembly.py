"""A pipeline directory shipped without some parts' weights (the default model takes its text encoder from the
all-MiniLM-L6-v2 package) gets them linked in once, under DATA_DIR/models, as an ordinary diffusers directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from inhouse.config import ModelEntry
from inhouse.engines.locate import require_model


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(json.dumps([str(p), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:12]


def pipeline_dir(entry: ModelEntry, models_dir: Path) -> Path:
    source = require_model(entry)
    if not entry.components:
        return source
    parts = {name: require_model(ModelEntry(id=f"{entry.id} {name}", kind=entry.kind, path=where))
             for name, where in sorted(entry.components.items())}
    weights = {name: sorted(p.glob("*.safetensors")) for name, p in parts.items()}
    shipped = _files(source)
    # A new package version (or new weights) gives a new directory; an unchanged one is reused as it is.
    target = models_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', entry.id)}-" \
                          f"{_fingerprint(shipped + [w for ws in weights.values() for w in ws])}"
    if (target / "model_index.json").exists():
        return target
    tmp = models_dir / f".{target.name}.{uuid.uuid4().hex}.tmp"
    for f in shipped:
        link = tmp / f.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f.resolve(), link)
    for name, files in weights.items():
        (tmp / name).mkdir(parents=True, exist_ok=True)
        for w in files:
            if not (tmp / name / w.name).exists():
                os.symlink(w.resolve(), tmp / name / w.name)
    try:
        os.replace(tmp, target)
    except OSError:  # another process assembled it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
