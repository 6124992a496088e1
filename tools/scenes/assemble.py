"""Turn trained weight files (train.py's output) into the pipeline directory that Inhouse ships.

    python -m scenes.assemble --weights DIR --text-encoder DIR --out DIR [--with-text-encoder-weights]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scenes.pipeline import write_pipeline


def load_weights(weights: Path) -> tuple[dict[str, object], dict[str, object], float]:
    from safetensors.torch import load_file

    unet = {k: v.float() for part in ("unet-1", "unet-2")
            for k, v in load_file(str(weights / f"{part}.safetensors")).items()}
    vae = {k: v.float() for k, v in load_file(str(weights / "vae.safetensors")).items()}
    scaling = float(json.loads((weights / "train_log.json").read_text())["scaling_factor"])
    return unet, vae, scaling


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--weights", required=True, type=Path)
    p.add_argument("--text-encoder", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--with-text-encoder-weights", action="store_true")
    a = p.parse_args(argv)
    unet, vae, scaling = load_weights(a.weights)
    write_pipeline(a.out, unet, vae, scaling, a.text_encoder, with_text_encoder_weights=a.with_text_encoder_weights)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
