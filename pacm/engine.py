"""PACM engine: DDIM inversion, pose-aware inversion, pose-aware embedding optimisation, frame sampling.

Parametrisation (ComfyUI's sigma space, SD1.5): a latent at noise level ``sigma`` is ``x = x0 + sigma * eps``
(not pre-scaled); the model (a ``Denoiser``, see DEVELOPERS.md) takes ``(x, sigma)`` and returns the x0
prediction; ``alphas_cumprod = 1 / (1 + sigma**2)``. DDIM with eta 0 in this space is
``eps = (x - x0) / sigma; x_next = x0 + sigma_next * eps`` (ComfyUI's "ddim" sampler, Euler in sigma space).
CFG combines x0 predictions: ``x0 = x0_uncond + cfg * (x0_cond - x0_uncond)`` (as ComfyUI does), or through the
model's own ``combine_cfg(x0_cond, x0_uncond, cfg, x, sigma)`` where it has one (a host applying a CFG function such
as ComfyUI's RescaleCFG; also in the CFG step the optimisation differentiates).

Shapes: latents ``(C, h, w)`` per frame, embeddings ``(L, D)`` per frame (e.g. ``(77, 768)``), pose hints
``(3, H, W)`` in 0..1 with ``H, W`` the image size (8 x the latent size for SD1.5). Batched inputs with a
leading batch dimension of 1 are accepted where one item is expected.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from .results import EvalCount, InversionResult, PoseEmbeddings
from .schedule import ddim_uniform_sigmas, vp_scale

log = logging.getLogger(__name__)

Callback = Callable[[str, int, int], None]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
UNCOND_POSES = ("target", "source")  # sample_frames' uncond_pose: the pose of the unconditional rows


# --------------------------------------------------------------------------------------------- helpers
def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _one(name: str, t: torch.Tensor | None, ndim: int, allow_none: bool = False) -> torch.Tensor | None:
    if t is None:
        if allow_none:
            return None
        raise ValueError(f"{name}: a tensor is required. Fix: pass a torch.Tensor")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}. "
                         "Fix: pass a torch.Tensor (e.g. torch.as_tensor(x))")
    if t.ndim == ndim + 1 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions (or a leading batch of 1), got shape {tuple(t.shape)}. "
                         f"Fix: pass a tensor with {ndim} dimensions")
    return t


def _check_hints(name: str, hints: torch.Tensor | None) -> torch.Tensor | None:
    if hints is None:
        return None
    if not isinstance(hints, torch.Tensor) or hints.ndim != 4 or hints.shape[1] != 3:
        shape = tuple(hints.shape) if isinstance(hints, torch.Tensor) else type(hints).__name__
        raise ValueError(f"{name}: expected pose images (N, 3, H, W) in 0..1, got {shape}. "
                         "Fix: pass a batch of RGB pose images, channels first, or None")
    return hints


def _sigmas_for(model, steps: int, sigmas: torch.Tensor | None) -> torch.Tensor:
    if sigmas is None:
        return ddim_uniform_sigmas(model.sigmas, steps)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sigmas.numel() < 2 or float(sigmas[-1]) != 0.0 or not bool((sigmas[:-1] > sigmas[1:]).all()):
        raise ValueError("sigmas: expected a descending 1-D schedule ending with 0 (ComfyUI SIGMAS). "
                         "Fix: pass None (DDIM-uniform steps) or a schedule such as "
                         "ddim_uniform_sigmas(model.sigmas, steps)")
    return sigmas


# the source frame's one-frame batch (stages 1-2): per-frame hints of other ControlNets give it image 0
_SOURCE_ROW = {"row_frames": [0]}


def _row_frames(rows: list | None, sel) -> dict | None:
    """``poseanimate`` for a call on the one-frame chunks ``sel`` of a batch whose rows are the global frames
    ``rows`` (so that per-frame images of the CONDITIONING's ControlNets reach the right rows, on both CFG sides)."""
    if rows is None:
        return None
    return {"row_frames": [int(rows[int(i)]) for i in sel]}


def _options(transformer_options: dict | None, cond_or_uncond: list[int], poseanimate: dict | None) -> dict:
    """A fresh per-call transformer_options: the caller's passthrough (shallow copy) + the engine's keys."""
    to = dict(transformer_options or {})
    to["cond_or_uncond"] = list(cond_or_uncond)
    if poseanimate is not None:
        pa = dict(to.get("poseanimate") or {})
        pa.update(poseanimate)
        to["poseanimate"] = pa
    return to


def _call(model, x, sigma: float, context, hint, cond_or_uncond, transformer_options, poseanimate=None):
    """One model evaluation. x (B, C, h, w) work dtype; returns x0 (B, C, h, w) in x's dtype."""
    mdt = model.dtype
    b = x.shape[0]
    sig = torch.full((b,), float(sigma), device=model.device, dtype=mdt)
    h = None if hint is None else hint.to(device=model.device, dtype=mdt)
    out = model(x.to(mdt), sig, context.to(mdt), h, _options(transformer_options, cond_or_uncond, poseanimate))
    return out.to(x.dtype)


def _cfg(model, x0_cond, x0_uncond, cfg: float, x, sigma: float):
    """Classifier-free guidance of two x0 predictions: the model's ``combine_cfg`` if it has one, else
    ``x0_uncond + cfg * (x0_cond - x0_uncond)``."""
    combine = getattr(model, "combine_cfg", None)
    if combine is None:
        return x0_uncond + cfg * (x0_cond - x0_uncond)
    return combine(x0_cond, x0_uncond, cfg, x, sigma)


def _ddim(x, x0, sigma: float, sigma_next: float):
    """DDIM (eta 0) in sigma space: x_next = x0 + sigma_next * (x - x0) / sigma."""
    return x0 + (x - x0) * (sigma_next / sigma)


def _report(callback: Callback | None, stage: str, done: int, total: int) -> None:
    if callback is not None:
        callback(stage, done, total)


def _adam_update(p, g, m, v, step: int, lr: float):
    """torch.optim.Adam's update (defaults betas (0.9, 0.999), eps 1e-8, no weight decay), element-wise on the
    given rows; returns the new (p, m, v). Same operation order as torch's single-tensor implementation."""
    b1, b2 = ADAM_BETAS
    m = m.lerp(g, 1 - b1)
    v = v.mul(b2).addcmul(g, g, value=1 - b2)
    bc1 = 1 - b1 ** step
    bc2 = 1 - b2 ** step
    denom = (v.sqrt() / math.sqrt(bc2)).add(ADAM_EPS)
    p = p.addcdiv(m, denom, value=-(lr / bc1))
    return p, m, v


class _Tally:
    """Adds model evaluations (sample units) to a stage's own ``EvalCount`` and to the caller's, if any."""

    def __init__(self, counts: EvalCount | None):
        if counts is not None and not isinstance(counts, EvalCount):
            raise ValueError(f"counts: expected a pacm.EvalCount or None, got {type(counts).__name__}. "
                             "Fix: pass a pacm.EvalCount() or None")
        self.own = EvalCount()
        self.counts = counts

    def forward(self, n: int) -> None:
        self.own.forward += n
        if self.counts is not None:
            self.counts.forward += n

    def forward_backward(self, n: int) -> None:
        self.own.forward_backward += n
        if self.counts is not None:
            self.counts.forward_backward += n


def _auto_loss_scale(model) -> float:
    """1 for float32/float64 models, 2**12 for float16/bfloat16 ones (with dynamic back-off). The model's
    ``compute_dtype`` (the dtype its network runs in, e.g. a host adapter that takes float32 inputs and runs the
    UNet in float16) decides when it has one, else its ``dtype``."""
    dtype = getattr(model, "compute_dtype", None) or model.dtype
    return 2.0 ** 12 if dtype in (torch.float16, torch.bfloat16) else 1.0


def _check_loss_scale(loss_scale) -> None:
    if loss_scale is not None and (isinstance(loss_scale, bool) or not isinstance(loss_scale, (int, float))
                                   or not math.isfinite(loss_scale) or loss_scale < 1):
        raise ValueError(f"loss_scale: expected None (automatic) or a finite number >= 1 (a power of two such as "
                         f"4096 keeps the gradient exact), got {loss_scale!r}. Fix: pass None or e.g. 4096")


def _check_common(inner_steps, lr, adaptive) -> None:
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
        raise ValueError(f"inner_steps: must be a non-negative integer, got {inner_steps!r}. "
                         "Fix: pass 0 or more (default 5)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr: must be a finite number >= 0, got {lr!r}. Fix: pass e.g. 0.01 (the default)")
    if adaptive is not None and (isinstance(adaptive, bool) or not isinstance(adaptive, (int, float))
                                 or not 0 < adaptive < 1):
        raise ValueError(f"adaptive: expected None (off) or a fraction between 0 and 1 (e.g. 0.05: stop a frame's "
                         f"inner loop once an iteration lowers its loss by less than 5 %), got {adaptive!r}. "
                         "Fix: pass None or a fraction such as 0.05")


def _lr_at(lr: float, i: int, T: int) -> float:
    """Learning rate of step i of T: ``lr * (1 - i / (2 * T))`` (null-text inversion's ``lr * (1 - i / 100)`` at
    T = 50, positive and decaying to about lr / 2 for any T)."""
    return lr * (1 - i / (2 * T))


def _nonfinite_loss(step: int, values: torch.Tensor) -> ValueError:
    kind = "NaN" if bool(torch.isnan(values).any()) else "inf"
    return ValueError(f"inner_steps: the loss became non-finite at step {step} ({kind}); the model may be running in "
                      "float16 without enough range, or an input holds NaN/inf. Fix: run the model in float32 or "
                      "bfloat16 and check the latent, prompt and pose inputs")


def _grad_pass(model, emb, sel, x, sigma, sigma_next, x0_cond, hints, target, cfg, scale, transformer_options,
               loss_scale: float, tally: _Tally, step: int, rows: list | None = None):
    """One forward + backward of the uncond branch for the frames ``sel``: returns (per-frame loss (b,),
    gradient (b, L, D), x_next (b, C, h, w) computed with the pre-update embedding, loss scale in effect).

    The loss is multiplied by ``loss_scale`` before ``torch.autograd.grad`` and the gradient divided by it
    afterwards (power-of-two scales are exact); if the scaled gradient is non-finite the scale is halved and
    the pass redone (down to 1). A non-finite loss raises ``ValueError``."""
    b = int(sel.numel())
    while True:
        with model.grad_context(), torch.enable_grad():
            # Indexing makes fresh (non-inference) tensors: the host runs nodes under torch.inference_mode()
            # and grad_context() leaves it; inference tensors must not enter the autograd graph.
            e = emb[sel].requires_grad_(True)
            xs, x0c, tg = x[sel], x0_cond[sel], target[sel]
            hs = None if hints is None else hints[sel]
            x0_u = _call(model, xs, sigma, e, hs, [1] * b, transformer_options, _row_frames(rows, sel))
            x0 = _cfg(model, x0c, x0_u, cfg, xs, sigma)
            xn = _ddim(xs, x0, sigma, sigma_next)
            per = ((xn - tg) * scale).pow(2).flatten(1).mean(1)
            loss = per.sum() if loss_scale == 1.0 else per.sum() * loss_scale
            (grad,) = torch.autograd.grad(loss, e)
        tally.forward_backward(b)
        if loss_scale != 1.0:
            grad = grad / loss_scale
        per = per.detach()
        finite = torch.stack([per.isfinite().all(), grad.isfinite().all()]).tolist()
        if not finite[0]:
            raise _nonfinite_loss(step, per)
        if finite[1]:
            return per, grad, xn.detach(), loss_scale
        if loss_scale <= 1.0:
            raise ValueError(f"loss_scale: the gradient became non-finite at step {step} even without loss scaling "
                             "(the loss itself is finite); the model may be running in float16 without enough "
                             "range. Fix: run the model in float32 or bfloat16")
        loss_scale = max(loss_scale / 2, 1.0)


def _optimise_step(model, x, sigma, sigma_next, x0_cond, emb_init, hints, target, cfg, lr, threshold, inner_steps,
                   transformer_options, *, mode: str = "inner", adaptive: float | None = None,
                   loss_scale: float = 1.0, tally: _Tally | None = None, step: int = 0,
                   uncond_is_cond: bool = False, rows: list | None = None):
    """Null-text-style optimisation of the uncond-slot embedding of B independent frames for one DDIM step.

    x, x0_cond, target: (B, C, h, w); emb_init (B, L, D); hints (B, 3, H, W) or None. Every frame is its own
    CFG chunk (cond_or_uncond = [1] * B), so cross-frame attention patches see B separate single-frame chunks.
    Per frame: loss = mean((vp(x_next) - vp(target))**2) in alpha space; loss summed over frames, so each
    frame's gradient is its own; Adam per element.

    mode "inner": up to ``inner_steps`` Adam iterations with per-frame early stopping (a frame stops after the
    iteration whose pre-update loss fell under ``threshold``, as null-text inversion, or — with ``adaptive`` —
    whose loss fell by less than that fraction of the previous iteration's), then one no-grad forward takes the
    step with the optimised embedding (skipped when ``inner_steps == 0`` and ``uncond_is_cond``: CFG then is
    the cond branch, ``x0 = x0_cond``, exactly). mode "alg1" (``inner_steps >= 1``): one forward + backward;
    the step is taken with that forward's x_next (pre-update embedding) and the embedding gets one Adam update.

    Returns (emb (B, L, D), x_next (B, C, h, w), loss_before (B,), loss_after (B,), iters (B,), loss_scale).
    """
    tally = _Tally(None) if tally is None else tally
    b = x.shape[0]
    scale = vp_scale(float(sigma_next))
    if mode == "alg1" and inner_steps > 0:
        sel = torch.arange(b, device=emb_init.device)
        per, grad, x_next, loss_scale = _grad_pass(
            model, emb_init.detach(), sel, x, sigma, sigma_next, x0_cond, hints, target, cfg, scale,
            transformer_options, loss_scale, tally, step, rows)
        zeros = torch.zeros_like(grad)
        emb, _m, _v = _adam_update(emb_init.detach(), grad, zeros, zeros, 1, lr)
        if not bool(emb.isfinite().all()):
            raise ValueError(f"lr: the embedding became non-finite at step {step}. Fix: lower lr")
        loss = per.float().cpu()
        return emb, x_next, loss, loss.clone(), torch.ones(b, dtype=torch.long), loss_scale
    emb = emb_init.detach().clone()
    m = torch.zeros_like(emb)
    v = torch.zeros_like(emb)
    active = torch.ones(b, dtype=torch.bool)
    iters = torch.zeros(b, dtype=torch.long)
    prev = None if adaptive is None else torch.full((b,), math.inf, dtype=torch.float64)
    loss_before = None
    for j in range(inner_steps):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        sel = idx.to(emb.device)
        per, grad, _xn, loss_scale = _grad_pass(
            model, emb, sel, x, sigma, sigma_next, x0_cond, hints, target, cfg, scale, transformer_options,
            loss_scale, tally, step, rows)
        if loss_before is None:
            loss_before = per.float().cpu()
        p, mm, vv = _adam_update(emb[sel], grad, m[sel], v[sel], j + 1, lr)
        emb[sel], m[sel], v[sel] = p, mm, vv
        iters[idx] += 1
        stop = (per < threshold).cpu()
        if adaptive is not None:
            per_cpu = per.double().cpu()
            last = prev[idx]
            stop |= (last - per_cpu) < adaptive * last      # relative decrease under `adaptive` (never at j = 0)
            prev[idx] = per_cpu
        active[idx[stop]] = False
    if inner_steps > 0 and not bool(emb.isfinite().all()):
        raise ValueError(f"lr: the embedding became non-finite at step {step}. Fix: lower lr")
    with torch.no_grad():
        if inner_steps == 0 and uncond_is_cond:
            x0 = x0_cond
        else:
            x0_u = _call(model, x, sigma, emb, hints, [1] * b, transformer_options,
                         _row_frames(rows, torch.arange(b)))
            tally.forward(b)
            x0 = _cfg(model, x0_cond, x0_u, cfg, x, sigma)
        x_next = _ddim(x, x0, sigma, sigma_next)
        loss_after = ((x_next - target) * scale).pow(2).flatten(1).mean(1).float().cpu()
    if not bool(loss_after.isfinite().all()):
        raise _nonfinite_loss(step, loss_after)
    if loss_before is None:
        loss_before = loss_after.clone()
    return emb, x_next, loss_before, loss_after, iters, loss_scale


# --------------------------------------------------------------------------------------------- stage 1
def ddim_invert(model, latent: torch.Tensor, cond: torch.Tensor, hint: torch.Tensor | None = None, *,
                steps: int = 50, sigmas: torch.Tensor | None = None, callback: Callback | None = None,
                transformer_options: dict | None = None, counts: EvalCount | None = None) -> InversionResult:
    """DDIM inversion (eta 0) of the source latent under its pose at guidance 1 (stage 1).

    Args:
        model: a ``Denoiser`` (DEVELOPERS.md): ``model(x, sigma, context, hint, transformer_options) -> x0``.
        latent: ``(C, h, w)`` or ``(1, C, h, w)`` source latent Z_0 (VAE latent, sigma space at sigma 0, i.e. as
            ComfyUI's LATENT "samples" after the model's latent format processing).
        cond: ``(L, D)`` or ``(1, L, D)`` prompt embedding.
        hint: ``(3, H, W)`` or ``(1, 3, H, W)`` source pose image in 0..1, or None for no pose control.
        steps: number of DDIM steps T (default 50); the schedule is ComfyUI's "ddim_uniform" over
            ``model.sigmas`` (``pacm.ddim_uniform_sigmas``) unless ``sigmas`` is given.
        sigmas: optional explicit ``(T + 1,)`` descending schedule ending with 0 (ComfyUI SIGMAS).
        callback: ``callback("invert", done, total)`` after every model call; an exception stops the run.
        transformer_options: passthrough dict merged into every model call's transformer_options.
        counts: an ``EvalCount`` this stage adds its model evaluations to (T forwards of one sample).

    Each step t = 1..T goes from Z_{t-1} (noise level s = sigmas[T-t+1]) to Z_t (s' = sigmas[T-t]) with the
    model evaluated at s' on Z_{t-1} re-scaled so the network sees the alpha-space latent Z_{t-1}/sqrt(1+s^2)
    (exactly the diffusers/null-text DDIM inversion): ``eps = (x - x0) / s'`` with
    ``x = Z_{t-1} * sqrt((1+s'^2)/(1+s^2))``, ``Z_t = Z_{t-1} + (s' - s) * eps``. cond_or_uncond is ``[0]``.

    Returns an ``InversionResult`` with ``trajectory`` ``(T + 1, C, h, w)`` (Z_0..Z_T), ``uncond`` None, cfg 1,
    ``evals`` this stage's counts.
    """
    tally = _Tally(counts)
    z0 = _one("latent", latent, 3)
    cond = _one("cond", cond, 2)
    hint = _one("hint", hint, 3, allow_none=True)
    sig = _sigmas_for(model, steps, sigmas)
    T = sig.shape[0] - 1
    wd = _work_dtype(z0)
    z = z0.to(device=model.device, dtype=wd)[None]
    ctx = cond.to(device=model.device)[None]
    hb = None if hint is None else hint.to(model.device)[None]
    traj = [z[0].clone()]
    with torch.no_grad():
        for t in range(1, T + 1):
            s, s_up = float(sig[T - t + 1]), float(sig[T - t])
            x = z * math.sqrt((1 + s_up ** 2) / (1 + s ** 2))
            x0 = _call(model, x, s_up, ctx, hb, [0], transformer_options, _SOURCE_ROW)
            tally.forward(1)
            eps = (x - x0) / s_up
            z = z + (s_up - s) * eps
            traj.append(z[0].clone())
            _report(callback, "invert", t, T)
    return InversionResult(
        sigmas=sig, trajectory=torch.stack(traj), cond=cond.detach().to(model.device, wd).clone(),
        uncond=None, hint=None if hint is None else hint.detach().to(model.device).clone(), cfg=1.0,
        settings={"steps": T, "scheduler": "ddim_uniform" if sigmas is None else "custom"},
        evals=tally.own.as_dict())


# --------------------------------------------------------------------------------------------- stage 2
def pose_aware_inversion(model, inversion: InversionResult, *, cfg: float = 7.5, inner_steps: int = 5,
                         lr: float = 1e-2, early_stop: float = 1e-5, init: torch.Tensor | None = None,
                         adaptive: float | None = None, loss_scale: float | None = None,
                         counts: EvalCount | None = None, callback: Callback | None = None,
                         transformer_options: dict | None = None) -> InversionResult:
    """Pose-aware inversion (stage 2): null-text inversion of the source under its own pose.

    Args:
        model: a ``Denoiser``.
        inversion: the ``InversionResult`` of ``ddim_invert`` (its sigmas, trajectory Z_0..Z_T, cond, hint).
        cfg: guidance scale of the CFG the embeddings are optimised for (default 7.5).
        inner_steps: Adam iterations per step (default 5). 0: no optimisation; with the default prompt ``init``
            this is negative-prompt inversion (uncond = cond, so CFG is the cond branch) and costs T forwards.
        lr: base learning rate; step i of T uses ``lr * (1 - i / (2 * T))`` (null-text inversion's
            ``lr * (1 - i / 100)`` at T = 50; stays positive for any T).
        early_stop: step i stops its inner loop after the iteration whose loss is under
            ``early_stop + i * 2e-5`` (null-text inversion).
        init: ``(L, D)`` initial uncond-slot embedding; default the prompt embedding ``inversion.cond`` (the
            paper's choice). Pass the negative-prompt embedding for classic null-text inversion.
        adaptive: None, or a fraction in (0, 1): the inner loop also stops after an iteration whose loss fell by
            less than ``adaptive`` times the previous iteration's loss (on top of ``early_stop``).
        loss_scale: loss scaling for the backward pass: the loss is multiplied by it before
            ``torch.autograd.grad`` and the gradient divided by it after; a non-finite scaled gradient halves it
            and redoes the iteration (down to 1). None: 1 for float32/float64 models, 2**12 for float16/bfloat16.
        counts: an ``EvalCount`` this stage adds its model evaluations to.
        callback: ``callback("pose_aware_inversion", done, total)`` once per step (between model calls).
        transformer_options: passthrough dict merged into every model call's transformer_options.

    For step i = 0..T-1 (from sigmas[i] to sigmas[i+1], i.e. from Z_t to Z_{t-1} with t = T - i), starting at
    x = Z_T: the cond branch x0_c = model(x, sigmas[i], cond, hint) is computed once without gradients; the
    embedding (carried over from the previous step) gets up to ``inner_steps`` Adam updates minimising the
    alpha-space MSE ``mean((x_next - Z_{t-1})**2) / (1 + sigmas[i+1]**2)`` with
    ``x_next = DDIM(x, CFG(x0_c, x0_u))`` (``x0_u + cfg * (x0_c - x0_u)``, or the model's ``combine_cfg``:
    :func:`_cfg`); then the step is taken with the optimised embedding and the next step continues from that
    latent. Gradients flow only into the embedding (``model.grad_context()``).
    Evaluations per step: 1 cond forward + one forward-backward per inner iteration + 1 forward for the step
    (none when ``inner_steps=0``, the embedding is the prompt's and the model does not say ``cond_rows_differ``).

    A non-finite loss or embedding raises ``ValueError`` (never silently wrong embeddings).

    Returns a copy of ``inversion`` with ``uncond`` ``(T, L, D)`` (one embedding per step), ``cfg``,
    ``losses`` ``(T, 2)``, ``inner_iters`` ``(T,)``, ``reconstruction`` ``(C, h, w)`` (the latent the last
    step produced, = ``sample_frames(model, result)[0]`` up to float rounding), ``evals`` (this stage's counts)
    and the settings filled in.
    """
    if not isinstance(inversion, InversionResult):
        raise ValueError("inversion: expected the InversionResult of ddim_invert. Fix: pass what ddim_invert returned")
    _check_common(inner_steps, lr, adaptive)
    _check_loss_scale(loss_scale)
    tally = _Tally(counts)
    ls = float(_auto_loss_scale(model) if loss_scale is None else loss_scale)
    ls_start = ls
    sig = inversion.sigmas
    T = inversion.steps
    traj = inversion.trajectory.to(model.device)
    wd = _work_dtype(traj)
    traj = traj.to(wd)
    cond = inversion.cond.to(model.device, wd)[None]
    emb = cond.clone() if init is None else _one("init", init, 2).to(model.device, wd)[None].clone()
    # CFG of identical rows is the cond branch, unless the host gives cond rows more (an extra ControlNet on the
    # positive): then the step evaluates both rows, as sample_frames does, so frame 0 stays the reconstruction
    uncond_is_cond = (inner_steps == 0 and torch.equal(emb, cond) and not getattr(model, "cond_rows_differ", False))
    hb = None if inversion.hint is None else inversion.hint.to(model.device)[None]
    x = traj[T][None].clone()
    embs, losses, iters = [], [], []
    for i in range(T):
        s, s_next = float(sig[i]), float(sig[i + 1])
        with torch.no_grad():
            x0_c = _call(model, x, s, cond, hb, [0], transformer_options, _SOURCE_ROW)
        tally.forward(1)
        emb, x, lb, la, it, ls = _optimise_step(
            model, x, s, s_next, x0_c, emb, hb, traj[T - i - 1][None], cfg, _lr_at(lr, i, T),
            early_stop + i * 2e-5, inner_steps, transformer_options, adaptive=adaptive, loss_scale=ls,
            tally=tally, step=i, uncond_is_cond=uncond_is_cond, rows=_SOURCE_ROW["row_frames"])
        embs.append(emb[0].detach().clone())
        losses.append(torch.stack([lb[0], la[0]]))
        iters.append(it[0])
        _report(callback, "pose_aware_inversion", i + 1, T)
    settings = dict(inversion.settings)
    settings.update(inner_steps=inner_steps, lr=lr, early_stop=early_stop,
                    init="prompt" if init is None else "given", adaptive=adaptive, loss_scale=ls_start,
                    loss_scale_final=ls)
    return InversionResult(
        sigmas=sig, trajectory=inversion.trajectory, cond=inversion.cond, uncond=torch.stack(embs),
        hint=inversion.hint, cfg=float(cfg), settings=settings, losses=torch.stack(losses),
        inner_iters=torch.stack(iters), reconstruction=x[0].detach().clone(), evals=tally.own.as_dict())


# --------------------------------------------------------------------------------------------- stage 3
MODES = ("inner", "alg1")


def optimize_pose_embeddings(model, inversion: InversionResult, hints: torch.Tensor | None, *,
                             frames: int | None = None, cfg: float | None = None, inner_steps: int = 5,
                             lr: float = 1e-2, early_stop: float = 1e-5, frames_per_batch: int | None = None,
                             mode: str = "inner", optimize_steps: int | None = None, warm_start: bool = False,
                             adaptive: float | None = None, loss_scale: float | None = None,
                             keyframe_interval: int = 1, counts: EvalCount | None = None,
                             callback: Callback | None = None,
                             transformer_options: dict | None = None) -> PoseEmbeddings:
    """Pose-aware embedding optimisation (stage 3, the paper's Alg. 1), all frames batched.

    Args:
        model: a ``Denoiser``.
        inversion: ``InversionResult`` of ``pose_aware_inversion`` (its per-step ``uncond`` are the source
            embeddings each frame starts from; after plain ``ddim_invert`` the prompt embedding is used).
        hints: ``(N, 3, H, W)`` target pose images in 0..1 (target frame j + 1 uses ``hints[j]``), or None for
            no pose control (then ``frames`` gives N).
        frames: N when ``hints`` is None.
        cfg: guidance scale (default ``inversion.cfg``, 7.5 after pose-aware inversion).
        inner_steps, lr, early_stop, adaptive, loss_scale: as ``pose_aware_inversion`` (Adam iterations per step,
            lr schedule ``lr * (1 - i / (2 * T))``, per-frame early stop under ``early_stop + i * 2e-5``,
            per-frame adaptive stop, loss scaling). ``inner_steps=0``: no optimisation and no model pass at all
            (every frame keeps the source's per-step embeddings; losses NaN).
        frames_per_batch: frames per micro-batch; default: all frames up to 8 (the nodes size it from free memory with
            ``pipeline.runner``'s memory policy and pass the integer).
        mode: ``"inner"`` (default): up to ``inner_steps`` Adam iterations per step, then the frame takes the
            step with the optimised embedding (1 cond forward + ``inner_steps`` forward-backward + 1 forward per
            step and frame). ``"alg1"``: the paper's Algorithm 1 as written: ONE gradient step (one Adam update
            from fresh state) per step; the latent takes the step with the PRE-update embedding (the forward of
            the gradient gives x_next: 1 cond forward + 1 forward-backward per step and frame); the UPDATED
            embedding is stored for step i and is what ``sample_frames`` uses at step i. ``inner_steps``,
            ``early_stop`` are not used by "alg1" (except ``inner_steps=0``: no optimisation).
        optimize_steps: K, or None for all T: optimise only the first K steps (the noisy ones); steps >= K
            reuse step K-1's embedding and run no model pass. K > T means T.
        warm_start: start each frame's embedding at step i from its predecessor's optimised embedding for step
            i (frame order) instead of the source's ``inversion.uncond[i]``. Within a micro-batch frames run in
            parallel, so the chain is carried across micro-batches: every frame of a micro-batch starts from the
            last frame of the previous micro-batch (the first from the source's). ``frames_per_batch=1`` gives the
            exact predecessor chain; results then depend on ``frames_per_batch`` (pass it explicitly on CUDA).
        keyframe_interval: k >= 1: optimise only every k-th target frame (frames k, 2k, ... and always the last,
            :func:`keyframe_indices`); every other frame gets, at each step, the embeddings interpolated linearly
            by frame number between its neighbouring optimised frames, the source (frame 0, with the inversion's
            per-step embeddings) counting as the first (its losses stay NaN, its inner iterations 0). 1 = every frame.
        counts: an ``EvalCount`` this stage adds its model evaluations to.
        callback: ``callback("optimize", done, total)`` once per step and micro-batch (total = K * batches).
        transformer_options: passthrough dict merged into every model call's transformer_options.

    For every target frame: x starts at Z_T; at step i (sigmas[i] -> sigmas[i+1], t = T - i) the frame's
    embedding starts from the source embedding ``inversion.uncond[i]``, the cond branch (prompt, target pose)
    is computed once without gradients, and up to ``inner_steps`` Adam iterations minimise the alpha-space MSE
    between the CFG DDIM step's result and the source trajectory's Z_{t-1}; the frame then takes the step
    with its optimised embedding. Frames are independent: each is its own CFG chunk (cond_or_uncond
    ``[1] * B`` / ``[0] * B``, so cross-frame attention patches see single-frame chunks), the loss is summed
    over frames, Adam is element-wise and early stopping is per frame — so any ``frames_per_batch`` gives the same
    embeddings as optimising each frame alone (``frames_per_batch=1``; not with ``warm_start``, and in float16 the
    loss-scale back-off is per micro-batch).

    A non-finite loss or embedding raises ``ValueError`` (never silently wrong frames).

    Returns ``PoseEmbeddings`` with ``uncond`` ``(N, T, L, D)`` and ``evals`` (this stage's counts).
    """
    if not isinstance(inversion, InversionResult):
        raise ValueError("inversion: expected the InversionResult of pose_aware_inversion. "
                         "Fix: pass what pose_aware_inversion returned")
    hints = _check_hints("hints", hints)
    n = int(hints.shape[0]) if hints is not None else frames
    if n is None or n < 1:
        raise ValueError("hints: no target frame to optimise. Fix: give at least one target pose "
                         "(or frames >= 1 without pose control)")
    if frames_per_batch is not None and (isinstance(frames_per_batch, bool) or not isinstance(frames_per_batch, int) or frames_per_batch < 1):
        raise ValueError(f"frames_per_batch: must be a positive integer or None (auto), got {frames_per_batch!r}. "
                         "Fix: pass 1 or more, or None")
    _check_common(inner_steps, lr, adaptive)
    _check_loss_scale(loss_scale)
    if mode not in MODES:
        raise ValueError(f"mode: expected 'inner' (inner Adam loop per step) or 'alg1' (one gradient step per "
                         f"step, the paper's Algorithm 1), got {mode!r}. Fix: pass 'inner' or 'alg1'")
    if mode == "alg1" and adaptive is not None:
        raise ValueError("adaptive: only with mode='inner' (mode 'alg1' makes exactly one gradient step per step). "
                         "Fix: pass adaptive=None")
    if optimize_steps is not None and (isinstance(optimize_steps, bool) or not isinstance(optimize_steps, int)
                                       or optimize_steps < 1):
        raise ValueError(f"optimize_steps: must be a positive integer (optimise the first K steps) or None (all "
                         f"steps), got {optimize_steps!r}. Fix: pass 1 or more, or None")
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start: expected True or False, got {warm_start!r}. Fix: pass a bool")
    optimised = keyframe_indices(n, keyframe_interval)
    tally = _Tally(counts)
    ls_start = float(_auto_loss_scale(model) if loss_scale is None else loss_scale)
    ls_state = {"scale": ls_start}
    cfg = float(inversion.cfg if cfg is None else cfg)
    sig = inversion.sigmas
    T = inversion.steps
    K = T if optimize_steps is None else min(optimize_steps, T)
    if inner_steps == 0:
        K = 0
    traj = inversion.trajectory.to(model.device)
    wd = _work_dtype(traj)
    traj = traj.to(wd)
    cond = inversion.cond.to(model.device, wd)
    src = (inversion.uncond if inversion.uncond is not None else inversion.cond[None].expand(T, -1, -1))
    src = src.to(model.device, wd)
    hints_dev = None if hints is None else hints.to(model.device)

    def run_batch(frames_idx: list[int], start=None, report_base: int = 0, report_total: int = 0):
        b = len(frames_idx)
        hb = None if hints_dev is None else hints_dev[frames_idx]
        rows = {"row_frames": [f + 1 for f in frames_idx]}  # global frame ids (the source is frame 0)
        x = traj[T][None].expand(b, -1, -1, -1).clone()
        cb = cond[None].expand(b, -1, -1)
        out = []
        for i in range(K):
            s, s_next = float(sig[i]), float(sig[i + 1])
            with torch.no_grad():
                x0_c = _call(model, x, s, cb, hb, [0] * b, transformer_options, rows)
            tally.forward(b)
            target = traj[T - i - 1][None].expand(b, -1, -1, -1)
            init = src[i] if start is None else start[i]
            emb, x, lb, la, it, ls_state["scale"] = _optimise_step(
                model, x, s, s_next, x0_c, init[None].expand(b, -1, -1), hb, target, cfg,
                _lr_at(lr, i, T), early_stop + i * 2e-5, inner_steps, transformer_options,
                mode=mode, adaptive=adaptive, loss_scale=ls_state["scale"], tally=tally, step=i,
                rows=rows["row_frames"])
            out.append((emb.detach(), lb, la, it))
            _report(callback, "optimize", report_base + i + 1, report_total)
        return out

    if frames_per_batch is None:  # the nodes and StickWorld size it (pipeline.runner); plain callers get up to 8
        frames_per_batch = min(n, 8)
    batches = [optimised[k:k + frames_per_batch] for k in range(0, len(optimised), frames_per_batch)]
    total = K * len(batches)
    uncond = torch.empty((n, T) + tuple(cond.shape), dtype=wd, device=model.device)
    losses = torch.full((n, T, 2), math.nan, dtype=torch.float32)
    iters = torch.zeros((n, T), dtype=torch.long)
    if K == 0:
        uncond[:] = src[None]
    for k, fr in enumerate(batches):
        if K == 0:
            break
        start = uncond[batches[k - 1][-1]] if warm_start and k > 0 else None
        res = run_batch(fr, start=start, report_base=k * K, report_total=total)
        for i, (emb, lb, la, it) in enumerate(res):
            uncond[fr, i] = emb
            losses[fr, i, 0] = lb
            losses[fr, i, 1] = la
            iters[fr, i] = it
        if K < T:
            uncond[fr, K:] = uncond[fr, K - 1:K]
    if K > 0 and len(optimised) < n:
        _interpolate_frames(uncond, optimised, src, K)
    return PoseEmbeddings(
        uncond=uncond, hints=None if hints is None else hints.detach().clone(), sigmas=sig, cfg=cfg,
        settings={"inner_steps": inner_steps, "lr": lr, "early_stop": early_stop, "frames_per_batch": frames_per_batch,
                  "steps": T, "mode": mode, "optimize_steps": optimize_steps, "warm_start": warm_start,
                  "adaptive": adaptive, "loss_scale": ls_start, "loss_scale_final": ls_state["scale"],
                  "keyframe_interval": keyframe_interval},
        losses=losses, inner_iters=iters, evals=tally.own.as_dict())


def keyframe_indices(n: int, interval: int) -> list[int]:
    """The target frames (0-based, target j is frame j + 1) that ``optimize_pose_embeddings`` optimises with
    ``keyframe_interval`` = ``interval``: frames interval, 2 * interval, ... and always the last; all for 1."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"keyframe_interval: must be a positive integer (1 = optimise every frame), got "
                         f"{interval!r}. Fix: pass 1, or k > 1 to optimise every k-th frame")
    chosen = list(range(interval - 1, n, interval))
    if not chosen or chosen[-1] != n - 1:
        chosen.append(n - 1)
    return chosen


def _interpolate_frames(uncond: torch.Tensor, optimised: list[int], src: torch.Tensor, K: int) -> None:
    """Fill the frames of ``uncond`` ``(N, T, L, D)`` that were not optimised: at each step the embedding linear in
    the frame number between the neighbouring optimised frames, the source (frame 0, ``src`` ``(T, L, D)``) being
    the first; steps from ``K`` on repeat step ``K - 1``, as for optimised frames."""
    anchors = [0] + [j + 1 for j in optimised]  # global frame ids
    T = uncond.shape[1]

    def at(frame: int) -> torch.Tensor:
        return src[:K] if frame == 0 else uncond[frame - 1, :K]

    for j in range(uncond.shape[0]):
        f = j + 1
        if f in anchors:
            continue
        b = next(a for a in anchors if a > f)
        a = max(x for x in anchors if x < f)
        w = (f - a) / (b - a)
        uncond[j, :K] = at(a) * (1 - w) + at(b) * w
        if K < T:
            uncond[j, K:] = uncond[j, K - 1:K]


# --------------------------------------------------------------------------------------------- stage 4
def sample_frames(model, inversion: InversionResult, embeddings: PoseEmbeddings | None = None, *,
                  hints: torch.Tensor | None = None, uncond: torch.Tensor | None = None, cfg: float | None = None,
                  window_size: int | None = None, masks: torch.Tensor | None = None, uncond_pose: str = "target",
                  hold_masks: torch.Tensor | None = None, callback: Callback | None = None,
                  transformer_options: dict | None = None, counts: EvalCount | None = None) -> torch.Tensor:
    """Final sampling (stage 4): DDIM from Z_T for the source frame 0 and target frames 1..N, with CFG.

    Args:
        model: a ``Denoiser``; the DCAM/MGDM attention patches it carries read
            ``transformer_options["poseanimate"]`` (DEVELOPERS.md, "DCAM windows").
        inversion: ``InversionResult`` (sigmas, Z_T, cond, source hint, per-step source ``uncond``).
        embeddings: ``PoseEmbeddings`` for frames 1..N (their ``uncond`` ``(N, T, L, D)`` and ``hints``), or None:
            then frames 1..N (from ``hints``) use the source's embeddings, and with no ``hints`` either only frame
            0 is sampled (the source reconstruction).
        hints: ``(N, 3, H, W)`` target poses; default ``embeddings.hints``.
        uncond: ``(L, D)`` fallback unconditional embedding (e.g. the negative prompt) for every frame and step
            without a per-step embedding (plain ``ddim_invert`` results).
        cfg: guidance scale; default ``embeddings.cfg``, else ``inversion.cfg``. At 1 only the cond branch runs.
        window_size: W, frames per model evaluation (default all N + 1). Each step loops the windows in frame order
            with one fresh ``kv_carry`` dict shared by that step's windows, so windowed sampling equals
            all-at-once sampling while peak memory stays flat in N.
        masks: optional ``(N + 1, H', W')`` character masks in [0, 1] by global frame id, passed to the patches.
        uncond_pose: which pose the unconditional rows see: ``"target"`` (each frame's own, as ComfyUI applies a
            ControlNet to both halves) or ``"source"`` (the source's pose for every frame, so that CFG pushes each
            frame from the source's pose towards its own; frame 0's rows stay equal). Needs pose hints and
            cfg != 1.
        hold_masks: optional ``(N + 1, h, w)`` weights in [0, 1] at the latent's size, by global frame id: 1 where
            a target frame is generated, 0 where it holds the source's background, i.e. after every step follows
            the source's inversion trajectory (``x = m * x + (1 - m) * Z_t``; static camera). Frame 0 (the source)
            is never held.
        callback: ``callback("sample", done, total)`` after every model evaluation (total = T * windows).
        transformer_options: passthrough dict (e.g. an attn2 capture patch) merged into every model call.
        counts: an ``EvalCount`` this stage adds its model evaluations to (T * 2 * (N + 1) forwards at cfg != 1,
            T * (N + 1) at cfg 1 and at every step where each frame's uncond row equals its cond row).

    Every model call gets the batch ``[uncond frames..., cond frames...]`` of one window with
    ``cond_or_uncond = [1, 0]`` (``[0]`` at cfg 1, and at a step where every frame's uncond embedding equals the
    prompt, ``uncond_pose`` is ``"target"`` and the model does not say ``cond_rows_differ``: CFG of identical rows
    is the cond prediction, so it is evaluated once) and ``poseanimate = {"frame_ids": [...], "kv_carry": {...},
    "masks": masks}``. Frame 0 uses the source pose and ``inversion.uncond[i]``; frame f >= 1 uses
    ``hints[f-1]`` and ``embeddings.uncond[f-1, i]``.

    Returns ``(N + 1, C, h, w)`` latents (sigma 0, same dtype as the trajectory); row 0 is the source frame.
    """
    if not isinstance(inversion, InversionResult):
        raise ValueError("inversion: expected an InversionResult. Fix: pass what pose_aware_inversion (or ddim_invert) "
                         "returned")
    tally = _Tally(counts)
    if embeddings is not None and not isinstance(embeddings, PoseEmbeddings):
        raise ValueError("embeddings: expected the PoseEmbeddings of optimize_pose_embeddings or None. "
                         "Fix: pass what optimize_pose_embeddings returned, or None")
    if hints is None and embeddings is not None:
        hints = embeddings.hints
    hints = _check_hints("hints", hints)
    sig = inversion.sigmas
    T = inversion.steps
    if embeddings is not None:
        if embeddings.uncond.shape[1] != T or not torch.equal(embeddings.sigmas.cpu(), sig.cpu()):
            raise ValueError("embeddings: they were optimised for other sigmas than this inversion's. "
                             "Fix: optimise them on this inversion (optimize_pose_embeddings)")
        n = embeddings.frames
        if hints is not None and hints.shape[0] != n:
            raise ValueError(f"hints: {hints.shape[0]} poses for {n} optimised frames. "
                             "Fix: pass one pose per optimised frame, or None for the embeddings' poses")
    else:
        n = 0 if hints is None else int(hints.shape[0])
    if (hints is None) != (inversion.hint is None) and n > 0:
        raise ValueError("hints: target poses and the source's pose hint must come together. "
                         "Fix: give target poses exactly when the source has a pose hint")
    F = n + 1
    if window_size is None:
        window_size = F
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size: must be a positive integer or None (all frames), got {window_size!r}. Fix: pass the "
                         "number of frames per model call")
    if cfg is None:
        cfg = embeddings.cfg if embeddings is not None else inversion.cfg
    cfg = float(cfg)
    if uncond_pose not in UNCOND_POSES:
        raise ValueError(f"uncond_pose: expected 'target' or 'source', got {uncond_pose!r}. Fix: choose one of them")
    if uncond_pose == "source" and (inversion.hint is None or cfg == 1.0):
        raise ValueError("uncond_pose: 'source' changes only the unconditional rows' pose, and there are none "
                         f"({'no pose hint' if inversion.hint is None else 'cfg 1'}). Fix: use 'target', or sample "
                         "with pose hints and cfg above 1")
    if uncond_pose == "source" and F == 1:
        raise ValueError("uncond_pose: 'source' changes the target frames' unconditional rows, and there is no target "
                         "frame. Fix: give target poses, or use 'target'")
    traj = inversion.trajectory.to(model.device)
    wd = _work_dtype(traj)
    cond = inversion.cond.to(model.device, wd)
    fallback = None if uncond is None else _one("uncond", uncond, 2).to(model.device, wd)
    if cfg != 1.0 and inversion.uncond is None and fallback is None:
        raise ValueError("uncond: this inversion has no per-step embeddings. Fix: give an unconditional embedding "
                         "(negative prompt) or run pose_aware_inversion first")
    src_emb = None if inversion.uncond is None else inversion.uncond.to(model.device, wd)
    frame_emb = None if embeddings is None else embeddings.uncond
    if masks is not None:
        if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or masks.shape[0] != F:
            raise ValueError(f"masks: expected ({F}, H, W) masks by global frame id, got "
                             f"{tuple(masks.shape) if isinstance(masks, torch.Tensor) else masks!r}. "
                             "Fix: pass one mask per frame, source first, or None")
        masks = masks.to(model.device)
    if hold_masks is not None:
        if (not isinstance(hold_masks, torch.Tensor) or hold_masks.ndim != 3 or hold_masks.shape[0] != F
                or tuple(hold_masks.shape[1:]) != tuple(traj.shape[-2:])):
            raise ValueError(f"hold_masks: expected ({F}, {traj.shape[-2]}, {traj.shape[-1]}) weights by global frame "
                             f"id at the latent's size, got {tuple(getattr(hold_masks, 'shape', ()))}. "
                             "Fix: pass one mask per frame, source first, at the latent's size, or None")
        hold_masks = hold_masks.to(model.device, wd)[:, None].clone()
        hold_masks[0] = 1.0  # the source frame is never held
    src_hint = None if inversion.hint is None else inversion.hint.to(model.device)
    hints_dev = None if hints is None else hints.to(model.device)

    def window_uncond(lo: int, hi: int, i: int) -> torch.Tensor:
        parts = []
        for f in range(lo, hi):
            if f > 0 and frame_emb is not None:
                parts.append(frame_emb[f - 1, i].to(model.device, wd))
            elif src_emb is not None:
                parts.append(src_emb[i])
            else:
                parts.append(fallback)
        return torch.stack(parts)

    def window_hint(lo: int, hi: int):
        if src_hint is None:
            return None
        parts = [src_hint[None]] if lo == 0 else []
        if hi > 1:
            parts.append(hints_dev[max(lo, 1) - 1:hi - 1])
        return torch.cat(parts)

    def uncond_hint(hb):
        return hb if uncond_pose == "target" or hb is None else src_hint[None].expand_as(hb)

    def rows_identical(i: int) -> bool:
        """Whether every frame's uncond row equals its cond row at step i: the same embedding and the same hints
        (the host does not treat cond rows apart, e.g. with a ControlNet on the positive conditioning)."""
        if getattr(model, "cond_rows_differ", False) or (uncond_pose == "source" and F > 1):
            return False
        for f in range(F):
            if f > 0 and frame_emb is not None:
                e = frame_emb[f - 1, i]
            else:
                e = src_emb[i] if src_emb is not None else fallback
            if e.shape != cond.shape or not torch.equal(e.to(cond.device, cond.dtype), cond):
                return False
        return True

    x = traj[T][None].expand(F, -1, -1, -1).clone()
    starts = list(range(0, F, window_size))
    total = T * len(starts)
    done = 0
    with torch.no_grad():
        for i in range(T):
            s, s_next = float(sig[i]), float(sig[i + 1])
            # CFG of identical rows is the cond prediction itself: evaluate it once (for every window of the
            # step, so the DCA carries hold the same chunk kinds throughout the step)
            once = cfg == 1.0 or rows_identical(i)
            kv_carry: dict = {}
            for lo in starts:
                hi = min(F, lo + window_size)
                xb = x[lo:hi]
                b = hi - lo
                hb = window_hint(lo, hi)
                pa = {"frame_ids": list(range(lo, hi)), "kv_carry": kv_carry}
                if masks is not None:
                    pa["masks"] = masks
                if once:
                    x0 = _call(model, xb, s, cond[None].expand(b, -1, -1), hb, [0], transformer_options, pa)
                    tally.forward(b)
                else:
                    ctx = torch.cat([window_uncond(lo, hi, i), cond[None].expand(b, -1, -1)])
                    hh = None if hb is None else torch.cat([uncond_hint(hb), hb])
                    out = _call(model, torch.cat([xb, xb]), s, ctx, hh, [1, 0], transformer_options, pa)
                    tally.forward(2 * b)
                    x0_u, x0_c = out[:b], out[b:]
                    x0 = _cfg(model, x0_c, x0_u, cfg, xb, s)
                x_next = _ddim(xb, x0, s, s_next)
                if hold_masks is not None:
                    m = hold_masks[lo:hi]
                    x_next = m * x_next + (1 - m) * traj[T - i - 1][None]
                x[lo:hi] = x_next
                done += 1
                _report(callback, "sample", done, total)
    return x
