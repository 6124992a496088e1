"""Train the shipped scenes model (seeded): a VAE on rendered scenes, then a UNet on frozen all-MiniLM-L6-v2.

    python -m scenes.train --text-encoder DIR --out DIR [--device cuda] [--unet-steps N]

Without --unet-steps/--vae-steps the step counts are set from a time budget after a short calibration and
written to train_log.json, so a run can be repeated with the same counts."""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from scenes.models import IMAGE_SIZE, MAX_TOKENS, NOISE, build_unet, build_vae
from scenes.render import render, render_params
from scenes.scene import sample_scene
from scenes.vocab import STYLE_SUFFIXES


class SceneStream(IterableDataset):  # type: ignore[misc,type-arg]
    """An endless stream of batches: render parameters plus tokenized captions (one seeded stream per worker)."""

    def __init__(self, seed: int, batch: int, tokenizer_dir: str, text: bool, relation_share: float) -> None:
        self.seed, self.batch, self.tokenizer_dir, self.text = seed, batch, tokenizer_dir, text
        self.relation_share = relation_share

    def __iter__(self) -> Any:
        from transformers import BertTokenizerFast

        info = get_worker_info()
        rng = random.Random(self.seed * 1009 + (info.id if info else 0))
        tok = BertTokenizerFast.from_pretrained(self.tokenizer_dir) if self.text else None
        while True:
            scenes = [sample_scene(rng, relation_share=self.relation_share) for _ in range(self.batch)]
            item = render_params(scenes)
            if tok is not None:
                captions = []
                for s in scenes:
                    u = rng.random()
                    # 10 % empty captions teach the unconditional model classifier-free guidance needs.
                    captions.append("" if u < 0.1 else f"{s.caption}, {rng.choice(STYLE_SUFFIXES)}" if u < 0.18
                                    else s.caption)
                t = tok(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
                item["input_ids"], item["attention_mask"] = t["input_ids"], t["attention_mask"]
            yield item


def batches(seed: int, batch: int, tokenizer_dir: str, text: bool, workers: int, pin: bool,
            relation_share: float) -> Any:
    loader = DataLoader(SceneStream(seed, batch, tokenizer_dir, text, relation_share), batch_size=None,
                        num_workers=workers, pin_memory=pin, prefetch_factor=4 if workers else None)
    return iter(loader)


class Schedule:
    """Step count fixed up front, or from a time budget after `calibrate` steps; warm-up then cosine."""

    def __init__(self, steps: int, seconds: float, warmup: int, calibrate: int = 40) -> None:
        self.total, self.seconds, self.warmup, self.calibrate = steps, seconds, warmup, calibrate
        self.t0 = 0.0

    def update(self, step: int) -> None:
        if step == 5:
            self.t0 = time.perf_counter()
        if self.total == 0 and step == self.calibrate:
            per_step = (time.perf_counter() - self.t0) / (self.calibrate - 5)
            self.total = max(self.calibrate + 1, int(self.seconds / per_step))
            print(f"  {per_step * 1000:.1f} ms/step -> {self.total} steps", flush=True)

    def factor(self, step: int) -> float:
        total = self.total or 10**9
        warm = min(1.0, (step + 1) / self.warmup)
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))

    def done(self, step: int) -> bool:
        return self.total > 0 and step >= self.total


def train_vae(a: argparse.Namespace, dev: Any, log: dict[str, Any]) -> Any:
    import torch

    vae = build_vae().to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    it = batches(a.seed, a.vae_batch, a.text_encoder, False, a.workers, dev.type == "cuda", a.relation_share)
    sched, step, t0 = Schedule(a.vae_steps, a.vae_seconds, 100), 0, time.perf_counter()
    while not sched.done(step):
        sched.update(step)
        for g in opt.param_groups:
            g["lr"] = a.vae_lr * sched.factor(step)
        x = render(next(it), IMAGE_SIZE, dev) * 2 - 1
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            h = vae.encode(x).latent_dist
            z = h.mean + h.std * torch.randn_like(h.mean)
            rec = vae.decode(z).sample.float()
        mean, logvar = h.mean.float(), h.logvar.float()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
        err = rec - x
        loss = err.abs().mean() + (err**2).mean() + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0 or sched.done(step):
            print(f"vae {step} loss {loss.item():.4f} l1 {err.abs().mean().item():.4f} "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    log["vae"] = {"steps": step, "final_loss": loss.item(), "seconds": round(time.perf_counter() - t0, 1)}
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        zs = [vae.encode(render(next(it), IMAGE_SIZE, dev) * 2 - 1).latent_dist.sample() for _ in range(8)]
    log["scaling_factor"] = float(1.0 / torch.cat(zs).float().std())
    return vae


def train_unet(a: argparse.Namespace, dev: Any, vae: Any, log: dict[str, Any],
               save: Any, init: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch
    from diffusers import DDPMScheduler
    from transformers import BertModel

    enc = BertModel.from_pretrained(a.text_encoder, dtype=torch.float32).to(dev).eval().requires_grad_(False)
    unet = build_unet()
    if init is not None:
        unet.load_state_dict(init)
    unet = unet.to(dev)
    params = [p for p in unet.parameters() if p.requires_grad]
    ema = [p.detach().clone().float() for p in params]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ac = DDPMScheduler(**NOISE).alphas_cumprod.to(dev)
    sf = log["scaling_factor"]
    it = batches(a.seed + 1, a.batch, a.text_encoder, True, a.workers, dev.type == "cuda", a.relation_share)
    sched, step, t0, last_save = Schedule(a.unet_steps, a.unet_seconds, 200), 0, time.perf_counter(), time.time()
    losses: list[float] = []
    while not sched.done(step):
        sched.update(step)
        for g in opt.param_groups:
            g["lr"] = a.lr * sched.factor(step)
        b = {k: v.to(dev, non_blocking=True) for k, v in next(it).items()}
        with torch.no_grad():
            x = render(b, IMAGE_SIZE, dev) * 2 - 1
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                z = vae.encode(x).latent_dist.sample().float() * sf
            text = enc(b["input_ids"], attention_mask=b["attention_mask"])[0]
        n = z.shape[0]
        # A little offset noise lets the model set an image's overall colour (plain backgrounds).
        noise = torch.randn_like(z) + a.offset_noise * torch.randn(n, z.shape[1], 1, 1, device=dev)
        t = torch.randint(0, NOISE["num_train_timesteps"], (n,), device=dev)
        abar = ac[t].view(n, 1, 1, 1)
        zt = abar.sqrt() * z + (1 - abar).sqrt() * noise
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            pred = unet(zt, t, text).sample.float()
        snr = ac[t] / (1 - ac[t])
        weight = snr.clamp(max=5.0) / snr  # min-SNR weighting: faster, steadier convergence
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - decay)
        step += 1
        if step % 50 == 0:
            losses.append(loss.item())
        if step % 250 == 0 or sched.done(step):
            print(f"unet {step}/{sched.total} loss {sum(losses[-5:]) / max(1, len(losses[-5:])):.4f} "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
        if save is not None and time.time() - last_save > a.checkpoint_seconds:
            log["unet"] = {"steps": step, "partial": True}
            save(_ema_state(unet, params, ema), vae, log)
            last_save = time.time()
    log["unet"] = {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "loss_every_50": losses[-40:],
                   "batch": a.batch}
    return _ema_state(unet, params, ema)


def _ema_state(unet: Any, params: list[Any], ema: list[Any]) -> dict[str, Any]:
    names = {id(p): n for n, p in unet.named_parameters()}
    state = {k: v.detach().float().cpu() for k, v in unet.state_dict().items()}
    for p, e in zip(params, ema, strict=True):
        state[names[id(p)]] = e.detach().cpu().clone()
    return state


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--text-encoder", required=True, help="all-MiniLM-L6-v2 directory (config, tokenizer, weights)")
    p.add_argument("--out", required=True, type=Path, help="where weights (and the pipeline) are written")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--vae-steps", type=int, default=0)
    p.add_argument("--vae-seconds", type=float, default=100)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=5e-4)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--unet-steps", type=int, default=0)
    p.add_argument("--unet-seconds", type=float, default=330)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--offset-noise", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--relation-share", type=float, default=0.4, help="share of two-object captions")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--checkpoint-seconds", type=float, default=60)
    p.add_argument("--init", type=Path, help="continue from an earlier run's output: its VAE is kept as it is, "
                   "its UNet trains on")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    a = parse(argv)
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    a.out.mkdir(parents=True, exist_ok=True)
    log: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()}, "torch": torch.__version__}

    def save(unet_state: dict[str, Any], vae: Any, log: dict[str, Any]) -> None:
        """Weights as files under 16 MB each (the UNet in two halves), fp16, plus the log."""
        half = {k: v.to(torch.float16).contiguous() for k, v in unet_state.items()}
        keys = sorted(half)
        total, acc, cut = sum(v.numel() for v in half.values()), 0, len(keys)
        for i, k in enumerate(keys):
            acc += half[k].numel()
            if acc > total / 2:
                cut = i + 1
                break
        save_file({k: half[k] for k in keys[:cut]}, str(a.out / "unet-1.safetensors"))
        save_file({k: half[k] for k in keys[cut:]}, str(a.out / "unet-2.safetensors"))
        save_file({k: v.detach().to(torch.float16).cpu().contiguous() for k, v in vae.state_dict().items()},
                  str(a.out / "vae.safetensors"))
        (a.out / "train_log.json").write_text(json.dumps(log, indent=1))

    t0 = time.perf_counter()
    if a.init is None:
        vae = train_vae(a, dev, log)
        unet_init = None
    else:
        from scenes.assemble import load_weights

        unet_init, vae_state, log["scaling_factor"] = load_weights(a.init)
        log["continued_from"] = json.loads((a.init / "train_log.json").read_text())
        vae = build_vae()
        vae.load_state_dict(vae_state)
        vae = vae.to(dev).eval().requires_grad_(False)
    unet_state = train_unet(a, dev, vae, log, save, unet_init)
    log["total_seconds"] = round(time.perf_counter() - t0, 1)
    save(unet_state, vae, log)
    print(json.dumps({k: v for k, v in log.items() if k != "args"})[:2000], flush=True)


if __name__ == "__main__":
    main()
