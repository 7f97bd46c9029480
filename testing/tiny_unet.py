"""A small SD1.5-shaped test UNet with a ControlNet-style pose branch, and a ``Denoiser`` over it.

Used by the CI tests and the CPU benchmark (and reusable for a trained synthetic benchmark). It mirrors the
parts of ComfyUI's ``openaimodel.UNetModel`` that PoseAnimate relies on:

* blocks named ``("input", i)``, ``("middle", 0)``, ``("output", i)`` in ``transformer_options["block"]``, with
  ``block_index``, ``transformer_index``, ``original_shape`` and ``activations_shape`` kept as ComfyUI does;
* transformer blocks with self-attention (attn1) and cross-attention (attn2) at input 3, middle 0 and every
  output block (the whole up path), calling ``transformer_options["patches_replace"]["attn1"/"attn2"]`` patches
  keyed ``(block_name, block_id, block_index)`` or ``(block_name, block_id)`` exactly as ComfyUI's
  ``BasicTransformerBlock``: ``fn(q, k, v, extra_options)`` with q, k, v projected ``(B, L, heads * dim_head)``
  and ``extra_options`` holding every transformer_options key except ``patches`` / ``patches_replace``, plus
  ``n_heads``, ``dim_head``, ``attn_precision``; ``patches`` ``attn1_patch``, ``attn2_patch``,
  ``attn1_output_patch``, ``attn2_output_patch`` and ``output_block_patch`` are honoured too;
* a pose-hint branch (``TinyPoseControl``) returning ComfyUI-style control residuals
  ``{"output": [...], "middle": [...]}`` that the UNet adds (out of place) to the skip connections / middle.

``TinyDenoiser`` implements the pacm ``Denoiser`` protocol in SD1.5's EPS parametrisation:
``x0 = x - sigma * eps_theta(x / sqrt(1 + sigma**2), t(sigma), context, control)``, ``t(sigma)`` the nearest
index in the log-sigma table (ComfyUI's ``ModelSamplingDiscrete.timestep``).
"""
from __future__ import annotations

import contextlib
import copy
import math
import types

import torch
from torch import nn
from torch.nn import functional as F

from pacm.schedule import sd15_sigma_table


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal timestep embedding, as ComfyUI's (cos first, then sin). timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain multi-head attention over projected q (B, Lq, H*d), k/v (B, Lk, H*d) -> (B, Lq, H*d)."""
    b, lq, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2)) * (d ** -0.5)
    out = w.softmax(dim=-1) @ v
    return out.transpose(1, 2).reshape(b, lq, inner)


class CrossAttention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x, context=None, value=None, transformer_options=None):
        context = x if context is None else context
        value = context if value is None else value
        return self.to_out(attention(self.to_q(x), self.to_k(context), self.to_v(value), self.heads))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, ff_mult: int = 2):
        super().__init__()
        self.n_heads = heads
        self.d_head = dim_head
        self.attn_precision = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm3 = nn.LayerNorm(dim)
        if ff_mult == 2:
            self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        else:  # SD1.5: GEGLU with 4x inner width
            self.ff = nn.Sequential(GEGLU(dim, ff_mult * dim), nn.Linear(ff_mult * dim, dim))

    def forward(self, x, context, transformer_options):
        # Follows comfy.ldm.modules.attention.BasicTransformerBlock.forward (0.3.64).
        extra_options = {}
        block = transformer_options.get("block", None)
        block_index = transformer_options.get("block_index", 0)
        patches = {}
        patches_replace = {}
        for k in transformer_options:
            if k == "patches":
                patches = transformer_options[k]
            elif k == "patches_replace":
                patches_replace = transformer_options[k]
            else:
                extra_options[k] = transformer_options[k]
        extra_options["n_heads"] = self.n_heads
        extra_options["dim_head"] = self.d_head
        extra_options["attn_precision"] = self.attn_precision

        n = self.norm1(x)
        context_attn1 = None
        value_attn1 = None
        if "attn1_patch" in patches:
            context_attn1 = n
            value_attn1 = context_attn1
            for p in patches["attn1_patch"]:
                n, context_attn1, value_attn1 = p(n, context_attn1, value_attn1, extra_options)
        transformer_block = (block[0], block[1], block_index) if block is not None else None
        replace1 = patches_replace.get("attn1", {})
        key1 = transformer_block if transformer_block in replace1 else block
        if key1 in replace1:
            if context_attn1 is None:
                context_attn1 = n
                value_attn1 = n
            q = self.attn1.to_q(n)
            k = self.attn1.to_k(context_attn1)
            v = self.attn1.to_v(value_attn1)
            n = self.attn1.to_out(replace1[key1](q, k, v, extra_options))
        else:
            n = self.attn1(n, context=context_attn1, value=value_attn1)
        for p in patches.get("attn1_output_patch", []):
            n = p(n, extra_options)
        x = n + x

        n = self.norm2(x)
        context_attn2 = context
        value_attn2 = None
        if "attn2_patch" in patches:
            value_attn2 = context_attn2
            for p in patches["attn2_patch"]:
                n, context_attn2, value_attn2 = p(n, context_attn2, value_attn2, extra_options)
        replace2 = patches_replace.get("attn2", {})
        key2 = transformer_block if transformer_block in replace2 else block
        if key2 in replace2:
            if value_attn2 is None:
                value_attn2 = context_attn2
            q = self.attn2.to_q(n)
            k = self.attn2.to_k(context_attn2)
            v = self.attn2.to_v(value_attn2)
            n = self.attn2.to_out(replace2[key2](q, k, v, extra_options))
        else:
            n = self.attn2(n, context=context_attn2, value=value_attn2)
        for p in patches.get("attn2_output_patch", []):
            n = p(n, extra_options)
        x = n + x
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, groups: int, ff_mult: int = 2):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim,
                                                                       ff_mult)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x, context, transformer_options):
        b, c, h, w = x.shape
        transformer_options["activations_shape"] = list(x.shape)
        x_in = x
        x = self.norm(x).movedim(1, 3).flatten(1, 2)
        x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = i
            x = block(x, context, transformer_options)
        x = self.proj_out(x)
        return x.reshape(b, h, w, c).movedim(3, 1) + x_in


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, output_shape=None):
        size = output_shape[2:] if output_shape is not None else None
        x = F.interpolate(x, size=size, scale_factor=None if size is not None else 2.0, mode="nearest")
        return self.conv(x)


def _run_block(layers: nn.ModuleList, h, emb, context, transformer_options, output_shape=None):
    # Follows comfy's forward_timestep_embed.
    for layer in layers:
        if isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, SpatialTransformer):
            h = layer(h, context, transformer_options)
            if "transformer_index" in transformer_options:
                transformer_options["transformer_index"] += 1
        elif isinstance(layer, Upsample):
            h = layer(h, output_shape=output_shape)
        else:
            h = layer(h)
    return h


def _apply_control(h, control, name):
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            h = h + ctrl  # out of place, so backward works
    return h


def _build_encoder(c: int, in_channels: int, channel_mult, num_res_blocks: int, attention_levels, emb_dim: int,
                   groups: int, st):
    """Input blocks and middle block as in ComfyUI's UNetModel; returns (input_blocks, middle, skip channels,
    skip downsampling factors)."""
    blocks = [nn.ModuleList([nn.Conv2d(in_channels, c, 3, padding=1)])]
    chans, downs = [c], [1]
    ch, ds = c, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers = [ResBlock(ch, mult * c, emb_dim, groups)]
            ch = mult * c
            if level in attention_levels:
                layers.append(st(ch))
            blocks.append(nn.ModuleList(layers))
            chans.append(ch)
            downs.append(ds)
        if level != len(channel_mult) - 1:
            blocks.append(nn.ModuleList([Downsample(ch)]))
            ds *= 2
            chans.append(ch)
            downs.append(ds)
    middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups), st(ch), ResBlock(ch, ch, emb_dim, groups)])
    return nn.ModuleList(blocks), middle, chans, downs


class TinyUNet(nn.Module):
    """SD1.5-shaped EPS UNet (ComfyUI ``UNetModel`` layout), small by default.

    Default (``channel_mult=(1, 2)``, ``num_res_blocks=1``, ``attention_levels=(1,)``,
    ``up_attention_levels=(0, 1)``), c = model_channels:
    input:  0 conv_in | 1 Res(c) | 2 Down | 3 Res(c->2c) + Transformer
    middle: Res(2c) + Transformer + Res(2c)
    output: 0 Res(4c->2c) + T | 1 Res(3c->2c) + T + Up | 2 Res(3c->c) + T | 3 Res(2c->c) + T
    i.e. attention (attn1 + attn2) at ("input", 3), ("middle", 0) and every ("output", i).
    ``sd15_config()`` gives SD1.5's sizes (320 channels, (1, 2, 4, 4), 2 res blocks, attention at levels
    0-2: "output" 3..11, context 768, 8 heads). ``dim_head=None`` means ``channels // heads`` (SD1.5).
    ``forward(x, timesteps, context, control=None, transformer_options={})`` returns eps ``(B, C, h, w)``.
    """

    def __init__(self, in_channels: int = 4, model_channels: int = 32, context_dim: int = 32, heads: int = 2,
                 dim_head: int | None = 16, groups: int = 8, out_scale: float = 1.0, time_scale: float = 1.0,
                 in_scale: float = 1.0, channel_mult=(1, 2), num_res_blocks: int = 1, attention_levels=(1,),
                 up_attention_levels=(0, 1), ff_mult: int = 2):
        super().__init__()
        c = model_channels
        self.time_scale = time_scale
        self.in_scale = in_scale
        self.in_channels = in_channels
        self.model_channels = c
        self.context_dim = context_dim
        self.config = dict(model_channels=c, context_dim=context_dim, heads=heads, dim_head=dim_head,
                           groups=groups, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                           attention_levels=tuple(attention_levels), ff_mult=ff_mult)
        emb_dim = 4 * c if c >= 64 else 2 * c
        self.time_embed = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def st(ch):
            return SpatialTransformer(ch, heads, dim_head or ch // heads, context_dim, groups, ff_mult)

        self.input_blocks, self.middle_block, chans, downs = _build_encoder(
            c, in_channels, channel_mult, num_res_blocks, attention_levels, emb_dim, groups, st)
        self.skip_channels = list(chans)
        self.skip_downsampling = list(downs)
        self.emb_dim = emb_dim
        ch = chans[-1]
        self.middle_channels = ch
        out = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), mult * c, emb_dim, groups)]
                ch = mult * c
                if level in up_attention_levels:
                    layers.append(st(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                out.append(nn.ModuleList(layers))
        self.output_blocks = nn.ModuleList(out)
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        with torch.no_grad():
            self.out[-1].weight.mul_(out_scale)
            self.out[-1].bias.mul_(out_scale)

    def attention_blocks(self) -> list[tuple[str, int]]:
        """Every (block_name, block_id) holding a transformer block, in ComfyUI naming."""
        found = []
        for name, blocks in (("input", self.input_blocks), ("middle", [self.middle_block]),
                             ("output", self.output_blocks)):
            for i, layers in enumerate(blocks):
                if any(isinstance(m, SpatialTransformer) for m in layers):
                    found.append((name, i))
        return found

    def forward(self, x, timesteps, context, control=None, transformer_options=None):
        transformer_options = {} if transformer_options is None else transformer_options
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        patches = transformer_options.get("patches", {})
        emb = self.time_embed(timestep_embedding(timesteps * self.time_scale, self.model_channels).to(x.dtype))
        hs = []
        h = x * self.in_scale
        for i, block in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", i)
            h = _run_block(block, h, emb, context, transformer_options)
            h = _apply_control(h, control, "input")
            hs.append(h)
        transformer_options["block"] = ("middle", 0)
        h = _run_block(self.middle_block, h, emb, context, transformer_options)
        h = _apply_control(h, control, "middle")
        for i, block in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", i)
            hsp = _apply_control(hs.pop(), control, "output")
            for p in patches.get("output_block_patch", []):
                h, hsp = p(h, hsp, transformer_options)
            h = torch.cat([h, hsp], dim=1)
            output_shape = hs[-1].shape if hs else None
            h = _run_block(block, h, emb, context, transformer_options, output_shape)
        return self.out(h)


def sd15_config() -> dict:
    """TinyUNet keyword arguments for SD1.5's UNet sizes (about 860M parameters with random weights)."""
    return dict(model_channels=320, context_dim=768, heads=8, dim_head=None, groups=32, channel_mult=(1, 2, 4, 4),
                num_res_blocks=2, attention_levels=(0, 1, 2), up_attention_levels=(0, 1, 2), ff_mult=4)


class TinyPoseControl(nn.Module):
    """ControlNet-style pose branch returning ComfyUI's control dict ``{"output": [...], "middle": [...]}``
    (one residual per skip connection, popped from the end by the UNet, plus one for the middle block).

    ``full_copy=False`` (tests): the hint (B, 3, 8h, 8w) is area-pooled to the latent grid and encoded, added
    to a small input path on x (and the timestep), and pooled / 1x1-projected ("zero convs") to every skip.
    ``full_copy=True`` (SD1.5-size benchmarks): a ControlNet proper — a copy of the UNet's input and middle
    blocks (own random weights, no transformer patches, as ComfyUI runs a ControlNet) with the encoded hint
    added after conv_in, and a zero conv per block.
    """

    def __init__(self, unet: TinyUNet, hint_channels: int = 3, scale: float = 1.0, full_copy: bool = False):
        super().__init__()
        c = unet.model_channels
        cfg = unet.config
        groups = cfg["groups"]
        emb_dim = unet.emb_dim
        self.model_channels = c
        self.time_scale = unet.time_scale
        self.in_scale = unet.in_scale
        self.full_copy = full_copy
        self.skip_downsampling = unet.skip_downsampling
        self.time_embed = nn.Sequential(nn.Linear(c, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.hint_block = nn.Sequential(nn.Conv2d(hint_channels, c, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(c, c, 3, padding=1))
        if full_copy:
            def st(ch):
                return SpatialTransformer(ch, cfg["heads"], cfg["dim_head"] or ch // cfg["heads"],
                                          cfg["context_dim"], groups, cfg["ff_mult"])

            self.input_blocks, self.middle_block, chans, _ = _build_encoder(
                c, unet.in_channels, cfg["channel_mult"], cfg["num_res_blocks"], cfg["attention_levels"], emb_dim,
                groups, st)
            self.zero_convs = nn.ModuleList([nn.Conv2d(ch, ch, 1) for ch in chans])
        else:
            self.conv_in = nn.Conv2d(unet.in_channels, c, 3, padding=1)
            self.res1 = ResBlock(c, c, emb_dim, groups)
            self.zero_convs = nn.ModuleList([nn.Conv2d(c, ch, 1) for ch in unet.skip_channels])
        self.middle_out = nn.Conv2d(unet.middle_channels if full_copy else c, unet.middle_channels, 1)
        with torch.no_grad():
            for conv in list(self.zero_convs) + [self.middle_out]:
                conv.weight.mul_(scale)
                conv.bias.mul_(scale)

    def forward(self, x, hint, timesteps, context=None):
        emb = self.time_embed(timestep_embedding(timesteps * self.time_scale, self.model_channels).to(x.dtype))
        # The pose image (8x the latent size for SD1.5) is area-pooled to the latent grid, then encoded.
        g = self.hint_block(F.interpolate(hint, size=x.shape[-2:], mode="area"))
        if self.full_copy:
            outs = []
            h = x * self.in_scale
            for i, block in enumerate(self.input_blocks):
                h = _run_block(block, h, emb, context, {})
                if i == 0:
                    h = h + g
                outs.append(self.zero_convs[i](h))
            h = _run_block(self.middle_block, h, emb, context, {})
            return {"output": outs, "middle": [self.middle_out(h)]}
        h0 = self.conv_in(x * self.in_scale) + g
        h1 = self.res1(h0, emb)
        outs = []
        for zc, ds in zip(self.zero_convs, self.skip_downsampling):
            outs.append(zc(F.avg_pool2d(h1, ds) if ds > 1 else h1))
        deepest = max(self.skip_downsampling)
        return {"output": outs, "middle": [self.middle_out(F.avg_pool2d(h1, deepest) if deepest > 1 else h1)]}


def _merge_options(own: dict, engine: dict) -> dict:
    """The model's own transformer_options (patches) merged with the engine's for one call."""
    out = dict(own)
    for key, value in engine.items():
        if key == "patches_replace" and key in out:
            merged = {k: dict(v) for k, v in out[key].items()}
            for kind, table in value.items():
                merged.setdefault(kind, {}).update(table)
            out[key] = merged
        elif key == "patches" and key in out:
            merged = {k: list(v) for k, v in out[key].items()}
            for kind, lst in value.items():
                merged.setdefault(kind, []).extend(lst)
            out[key] = merged
        else:
            out[key] = value
    return out


class TinyDenoiser:
    """``pacm`` Denoiser over ``TinyUNet`` (+ optional ``TinyPoseControl``), SD1.5 EPS parametrisation.

    ``TinyDenoiser(unet, control=None, sigmas=None, transformer_options=None)``;
    ``__call__(x, sigma, context, hint, transformer_options) -> x0``: x ``(B, C, h, w)`` sigma space, sigma
    ``(B,)``, context ``(B, L, D)``, hint ``(B, 3, 8h, 8w)`` or None. ``sigmas``: ``(1000,)`` ascending table
    (default SD1.5's). ``transformer_options``: the model's own patches (as a ComfyUI MODEL's
    ``model_options["transformer_options"]``), merged with the engine's on every call. ``grad_context()`` is a
    no-op (the weights are ordinary tensors). ``with_patch(kind, key, fn)`` returns a copy sharing the weights
    with ``patches_replace[kind][key] = fn`` added (as ``ModelPatcher.set_model_patch_replace`` on a clone).
    ``calls`` counts model calls; ``evals`` counts evaluations in samples (a call on a batch of B counts B), as
    ``{"forward": n, "forward_backward": m}`` (a call whose context requires grad counts as forward+backward);
    clones share one ``evals`` dict.
    """

    def __init__(self, unet: TinyUNet, control: TinyPoseControl | None = None, sigmas: torch.Tensor | None = None,
                 transformer_options: dict | None = None, prior: bool = False, evals: dict | None = None):
        self.unet = unet
        self.prior = prior
        self.control = control
        table = sd15_sigma_table() if sigmas is None else sigmas
        p = next(unet.parameters())
        self.sigmas = table.to(p.device).float()
        self.log_sigmas = self.sigmas.log()
        self.transformer_options = transformer_options or {}
        self.calls = 0
        self.evals = {"forward": 0, "forward_backward": 0} if evals is None else evals

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest discrete timestep (float) for each sigma, as ModelSamplingDiscrete.timestep."""
        dists = sigma.float().log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device).float()

    def __call__(self, x, sigma, context, hint, transformer_options):
        self.calls += 1
        kind = "forward_backward" if torch.is_grad_enabled() and context.requires_grad else "forward"
        self.evals[kind] += int(x.shape[0])
        to = _merge_options(self.transformer_options, transformer_options or {})
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        x_in = x * (s * s + 1.0).rsqrt()
        t = self.timestep(sigma)
        control = None
        if hint is not None and self.control is not None:
            control = self.control(x_in, hint.to(x.dtype), t, context)
        eps = self.unet(x_in, t, context, control=control, transformer_options=to)
        if self.prior:
            eps = eps + x_in * (s * (s * s + 1.0).rsqrt())
        return x - s * eps

    def grad_context(self):
        return contextlib.nullcontext()

    # ---- pipeline.runner.StageHost: plain torch, no memory manager (callers give every size explicitly) ------
    node = "StickWorld"

    def estimate(self, latent_shape) -> int:
        return 0

    def working_memory(self, latent_shape, grad: bool) -> int:
        return 0

    def free_memory(self) -> int:
        return 0

    def load(self, memory_required: int = 0) -> None:
        pass

    def check_grad_support(self) -> None:
        pass

    def engine(self):
        return torch.no_grad()

    # ---- the ModelPatcher look-alike that attention.install_patches / pipeline.patch_model use ----------------
    @property
    def model(self):
        """As ComfyUI's ``ModelPatcher.model``: ``model.diffusion_model`` is the UNet (walked for its blocks)."""
        return types.SimpleNamespace(diffusion_model=self.unet)

    def clone(self) -> "TinyDenoiser":
        """A copy sharing the weights whose patch tables are its own (as ``ModelPatcher.clone``)."""
        to = copy.copy(self.transformer_options)
        to["patches_replace"] = {k: dict(v) for k, v in to.get("patches_replace", {}).items()}
        return TinyDenoiser(self.unet, self.control, self.sigmas, to, self.prior, self.evals)

    def _set_replace(self, kind: str, patch, block_name: str, number: int, transformer_index=None) -> None:
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        self.transformer_options.setdefault("patches_replace", {}).setdefault(kind, {})[key] = patch

    def set_model_attn1_replace(self, patch, block_name: str, number: int, transformer_index=None) -> None:
        self._set_replace("attn1", patch, block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch, block_name: str, number: int, transformer_index=None) -> None:
        self._set_replace("attn2", patch, block_name, number, transformer_index)

    def with_patch(self, kind: str, key: tuple, fn) -> "TinyDenoiser":
        """A clone with ``patches_replace[kind][key] = fn`` added."""
        out = self.clone()
        out._set_replace(kind, fn, *key)
        return out


def make_tiny_denoiser(seed: int = 0, model_channels: int = 16, context_dim: int = 32, heads: int = 2,
                       dim_head: int | None = 8, groups: int = 4, out_scale: float = 0.3, time_scale: float = 1.0,
                       in_scale: float = 0.001, control_scale: float = 1.0, prior: bool = False,
                       with_control: bool = True, full_control: bool = False, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu", **unet_kwargs) -> TinyDenoiser:
    """A seeded ``TinyDenoiser`` (random init, eval mode, no grad on weights).

    The defaults make a random network behave like a smooth, well-conditioned denoiser so that the engine's
    exactness tests are precise: ``in_scale`` (0.001) makes eps nearly independent of the noisy latent (DDIM
    inversion at guidance 1 is exact for an eps that is constant along the trajectory; at 0.001 the 50-step
    reconstruction error is ~3e-4), ``out_scale`` (0.3) scales the eps head, while the text context and the
    pose hint keep a strong influence (CFG 7.5 on a plain inversion moves the reconstruction by O(1)).
    ``prior=True`` adds the Gaussian-data term ``eps += x_in * sigma / sqrt(1 + sigma**2)``.
    ``unet_kwargs`` go to ``TinyUNet`` (``channel_mult``, ``num_res_blocks``, ...); for SD1.5 sizes use
    ``make_tiny_denoiser(**sd15_config(), full_control=True, ...)`` (random weights; timing / memory only).
    """
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = TinyUNet(4, model_channels, context_dim, heads, dim_head, groups, out_scale, time_scale, in_scale,
                        **unet_kwargs)
        control = TinyPoseControl(unet, scale=control_scale, full_copy=full_control) if with_control else None
    finally:
        torch.random.set_rng_state(gen_state)
    for m in (unet, control):
        if m is not None:
            m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return TinyDenoiser(unet, control, prior=prior)
