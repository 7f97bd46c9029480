"""The StickWorld model: a word tokenizer, a token-embedding text encoder, and the engine's ``TinyUNet`` with its
ControlNet-style ``TinyPoseControl`` pose branch, in pixel space (the "latent" is the RGB image in -1..1).

``StickWorldModel.denoiser()`` returns the same ``testing.tiny_unet.TinyDenoiser`` the engine tests use, so the
benchmark runs the real engine code (DDIM inversion, pose-aware inversion, batched optimisation, windowed
sampling, DCAM / MGDM patches, cross-attention capture) on a trained network.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import torch
from torch import nn

from testing.tiny_unet import TinyDenoiser, TinyPoseControl, TinyUNet

from .world import ACCESSORIES, ACCESSORY_PHRASE, BACKGROUNDS, COLOURS, PATTERNS, TEMPLATE

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "stickworld" / "stickworld.pt"
PAD, BOS, EOS = 0, 1, 2
CONTEXT_LENGTH = 16

def _template_words(template: str) -> list[str]:
    return re.sub(r"\{\w+\}", " ", template).split()


# The first 29 entries are the vocabulary of the base model (before accessories); the accessory words follow, so a
# base checkpoint's rows keep their ids (scripts/stickworld_train.py --init copies rows by word anyway).
VOCAB = ("<pad>", "<bos>", "<eos>") + tuple(dict.fromkeys(
    _template_words(TEMPLATE) + list(COLOURS) + list(PATTERNS) + list(BACKGROUNDS)
    + _template_words(ACCESSORY_PHRASE) + [a for a in ACCESSORIES if a != "none"]))

UNET_CONFIG = dict(in_channels=3, model_channels=32, context_dim=64, heads=4, dim_head=16, groups=8,
                   channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(1, 2), up_attention_levels=(1, 2),
                   ff_mult=2)


def images_to_latents(images: np.ndarray, device=None) -> torch.Tensor:
    """RGB images (B, H, W, 3) in 0..1 -> the model's pixel-space latents (B, 3, H, W) in -1..1."""
    return torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2).to(device) * 2 - 1


def latents_to_images(x: torch.Tensor) -> np.ndarray:
    """Latents (B, 3, H, W) -> RGB images (B, H, W, 3) in 0..1 (clipped)."""
    return ((x.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


class Tokenizer:
    """Whole-word tokenizer over StickWorld's vocabulary: ``encode(text)`` gives ``CONTEXT_LENGTH`` ids
    ``[<bos>, words..., <eos>, <pad>...]`` (so ``attention.find_token_positions`` works on it)."""

    vocab = VOCAB

    def __init__(self):
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        words = [w for w in re.split(r"[\s,]+", text.lower()) if w]
        unknown = [w for w in words if w not in self.ids or self.ids[w] <= EOS]
        if unknown:
            raise ValueError(f"prompt: StickWorld does not know the words {unknown}; it knows {list(self.vocab[3:])}")
        ids = [BOS] + [self.ids[w] for w in words] + [EOS]
        if len(ids) > CONTEXT_LENGTH:
            raise ValueError(f"prompt: at most {CONTEXT_LENGTH - 2} words, got {len(words)}")
        return ids + [PAD] * (CONTEXT_LENGTH - len(ids))


class TextEncoder(nn.Module):
    """Token embedding + position embedding + LayerNorm: ids (B, L) -> context (B, L, dim)."""

    def __init__(self, vocab_size: int, dim: int, length: int = CONTEXT_LENGTH):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(length, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.token(ids) + self.position[: ids.shape[1]])


class StickWorldModel(nn.Module):
    """Text encoder + TinyUNet + TinyPoseControl, trained together (see ``scripts/stickworld_train.py``)."""

    def __init__(self, unet_config: dict | None = None):
        super().__init__()
        cfg = dict(UNET_CONFIG if unet_config is None else unet_config)
        self.unet_config = cfg
        self.tokenizer = Tokenizer()
        self.text = TextEncoder(len(VOCAB), cfg["context_dim"])
        self.unet = TinyUNet(**cfg)
        self.control = TinyPoseControl(self.unet)

    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        """Context (B, L, D) for prompts (a str gives B = 1)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        p = next(self.parameters())
        ids = torch.tensor([self.tokenizer.encode(t) for t in prompts], device=p.device)
        return self.text(ids).to(p.dtype)

    def eps(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        """The training forward pass: eps prediction for scaled noisy images x_in at timesteps t."""
        return self.unet(x_in, t, context, control=self.control(x_in, hint, t, context))

    def denoiser(self, transformer_options: dict | None = None) -> TinyDenoiser:
        """The pacm Denoiser over this model (SD1.5 sigma table, EPS parametrisation)."""
        return TinyDenoiser(self.unet, self.control, transformer_options=transformer_options)

    def save(self, path, meta: dict | None = None, half: bool = True) -> None:
        """Write weights (float16 by default) and config atomically to ``path``."""
        state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in self.state_dict().items()}
        path = pathlib.Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"unet_config": self.unet_config, "vocab": list(VOCAB), "state_dict": state,
                    "meta": meta or {}}, tmp)
        tmp.replace(path)


def load_model(path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> StickWorldModel:
    """Load a StickWorld checkpoint as an eval-mode model without gradients on its weights."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if list(ckpt["vocab"]) != list(VOCAB):
        theirs = list(ckpt["vocab"])
        raise ValueError(f"{path}: checkpoint vocabulary differs from this StickWorld's ({len(theirs)} words vs "
                         f"{len(VOCAB)}; new here: {[w for w in VOCAB if w not in theirs]}, only there: "
                         f"{[w for w in theirs if w not in VOCAB]}); fine-tune it with "
                         f"'scripts/stickworld_train.py --init {path}' or retrain")
    model = StickWorldModel(ckpt["unet_config"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    model.meta = ckpt.get("meta", {})
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
