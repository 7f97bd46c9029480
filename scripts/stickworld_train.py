"""Train the StickWorld model (text encoder + TinyUNet + pose branch) on freshly generated StickWorld scenes.

    python scripts/stickworld_train.py --out assets/stickworld            # the shipped weights (CPU, 2 threads)
    python scripts/stickworld_train.py --steps 200 --out /tmp/sw --device cuda
    python scripts/stickworld_train.py --init assets/stickworld/stickworld.pt --lr 3e-4 --warmup 50 --out /tmp/ft

``--init`` fine-tunes from an existing checkpoint whose vocabulary may differ (the accessory words were added
after the base model was trained): every weight is copied, the token embedding row by row for the words both
vocabularies share; rows for new words start at the mean of the old rows plus small seeded noise. The init
checkpoint's own training record is kept inside the new one (``training.json``'s ``init``).

Each step draws ``--batch`` new scenes from one seeded generator, picks SD1.5 timesteps uniformly, and
regresses the noise (SD1.5's EPS objective in ComfyUI's sigma space: x_t = x0 + sigma * eps, the UNet sees
x_t / sqrt(1 + sigma^2)). The prompt is dropped (empty prompt) for ``--drop`` of the samples so that
classifier-free guidance works. AdamW with warm-up and cosine decay, gradient clipping, and an EMA of the
weights, which is what is saved. Writes ``stickworld.pt`` (EMA weights, float16), ``loss.csv`` and
``loss.png``, ``training.json`` (command, seed, settings) and ``train_state.pt`` (full state for ``--resume``;
not shipped) into ``--out`` every ``--save-every`` steps.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pacm.schedule import sd15_sigma_table  # noqa: E402
from stickworld.model import VOCAB, StickWorldModel, images_to_latents  # noqa: E402
from stickworld.pictures import plot_loss  # noqa: E402
from stickworld.world import make_batch  # noqa: E402


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    u = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * u)))


def remap_embedding(old: torch.Tensor, old_vocab, new_vocab, generator: torch.Generator,
                    noise: float = 0.02) -> torch.Tensor:
    """Token-embedding rows (len(new_vocab), D) from rows ``old`` (len(old_vocab), D): a word both vocabularies
    share keeps its row exactly; a new word gets the mean of the old rows plus Gaussian noise of ``noise`` times
    their standard deviation (drawn from ``generator``)."""
    old = old.detach().float()
    if old.shape[0] != len(old_vocab):
        raise ValueError(f"old_vocab: {len(old_vocab)} words for {old.shape[0]} embedding rows")
    index = {w: i for i, w in enumerate(old_vocab)}
    mean, std = old.mean(0), old.std(0).mean()
    rows = []
    for w in new_vocab:
        if w in index:
            rows.append(old[index[w]])
        else:
            rows.append(mean + noise * std * torch.randn(old.shape[1], generator=generator))
    return torch.stack(rows)


def init_from(model: StickWorldModel, path, seed: int) -> dict:
    """Load checkpoint ``path`` into ``model`` (see the module docstring); returns the record of what was loaded:
    path, sha256, the checkpoint's vocabulary size, the new words and the checkpoint's own training record."""
    path = pathlib.Path(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if dict(ckpt["unet_config"]) != dict(model.unet_config):
        raise ValueError(f"--init: {path} has UNet config {ckpt['unet_config']}, this model {model.unet_config}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    key = "text.token.weight"
    state[key] = remap_embedding(state[key], ckpt["vocab"], VOCAB, torch.Generator().manual_seed(seed))
    model.load_state_dict(state)
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "vocab": len(ckpt["vocab"]),
            "new_words": [w for w in VOCAB if w not in set(ckpt["vocab"])], "meta": ckpt.get("meta", {})}


def check_args(args) -> None:
    """One-line errors (naming the flag) for settings that cannot train."""
    for flag, value, low in (("--steps", args.steps, 1), ("--batch", args.batch, 1), ("--threads", args.threads, 1),
                             ("--save-every", args.save_every, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            raise SystemExit(f"stickworld_train: {flag}: must be >= {low}, got {value}")
    if not args.lr > 0:
        raise SystemExit(f"stickworld_train: --lr: must be > 0, got {args.lr}")
    if not 0 <= args.ema < 1:
        raise SystemExit(f"stickworld_train: --ema: must be in [0, 1), got {args.ema}")
    if not 0 <= args.drop <= 1:
        raise SystemExit(f"stickworld_train: --drop: must be in [0, 1], got {args.drop}")
    if args.init is not None and not pathlib.Path(args.init).is_file():
        raise SystemExit(f"stickworld_train: --init: no checkpoint at {args.init}; give a stickworld.pt path")


def training_batch(rng: np.random.Generator, n: int, model: StickWorldModel, drop: float, device) -> tuple:
    batch = make_batch(rng, n)
    prompts = ["" if rng.random() < drop else p for p in batch["prompts"]]
    x0 = images_to_latents(batch["images"], device)
    hint = torch.from_numpy(batch["hints"]).permute(0, 3, 1, 2).to(device)
    ids = torch.tensor([model.tokenizer.encode(p) for p in prompts], device=device)
    return x0, hint, ids


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "assets" / "stickworld"), help="output folder")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--drop", type=float, default=0.1, help="fraction of samples trained with the empty prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--resume", action="store_true", help="continue from --out/train_state.pt")
    ap.add_argument("--init", default=None, metavar="PATH",
                    help="fine-tune from this checkpoint (its vocabulary may differ; shared words keep their rows)")
    args = ap.parse_args(argv)
    check_args(args)

    torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = StickWorldModel()
    init = init_from(model, args.init, args.seed) if args.init is not None else None
    model = model.to(args.device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sigmas = sd15_sigma_table().to(args.device)
    start, elapsed, rows = 0, 0.0, []
    state_path = out / "train_state.pt"
    if args.resume and state_path.exists():
        st = torch.load(state_path, map_location=args.device, weights_only=False)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        start, elapsed, rows = st["step"], st["elapsed"], st["rows"]
        print(f"resumed at step {start}")
    command = "python scripts/stickworld_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, batch {args.batch}, {args.steps} steps")
    window = []
    t_last = time.time()
    for step in range(start, args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x0, hint, ids = training_batch(rng, args.batch, model, args.drop, args.device)
        t = torch.randint(0, len(sigmas), (args.batch,), device=args.device)
        s = sigmas[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0)
        x_in = (x0 + s * noise) / (s * s + 1).sqrt()
        eps = model.eps(x_in, t.float(), model.text(ids), hint)
        loss = (eps - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        window.append(loss.item())
        now = time.time()
        elapsed += now - t_last
        t_last = now
        if (step + 1) % 10 == 0:
            rows.append({"step": step + 1, "loss": float(np.mean(window)), "lr": lr, "seconds": round(elapsed, 1)})
            window = []
            if (step + 1) % 100 == 0:
                print(f"step {step + 1}: loss {rows[-1]['loss']:.4f}  lr {lr:.2e}  {elapsed / 60:.1f} min", flush=True)
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            meta = {"command": command, "seed": args.seed, "steps": step + 1, "batch": args.batch, "lr": args.lr,
                    "ema": args.ema, "drop": args.drop, "parameters": n_params, "seconds": round(elapsed, 1),
                    "device": str(args.device), "threads": args.threads, "final_loss": rows[-1]["loss"] if rows else None,
                    "warmup": args.warmup, "init": init}
            ema.save(out / "stickworld.pt", meta)
            with open(out / "loss.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "seconds"])
                w.writeheader()
                w.writerows(rows)
            (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")
            if rows:
                plot_loss([r["step"] for r in rows], [r["loss"] for r in rows], out / "loss.png")
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step + 1,
                        "elapsed": elapsed, "rows": rows}, tmp)
            tmp.replace(state_path)
    print(f"done: {args.steps} steps in {elapsed / 60:.1f} min; weights in {out / 'stickworld.pt'}")


if __name__ == "__main__":
    main()
