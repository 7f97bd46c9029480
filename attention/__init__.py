"""PoseAnimate attention: DCAM / MGDM self-attention, cross-attention capture, character masks, token lookup.

Pure torch; never imports ComfyUI. Everything the nodes need:

DCAM / MGDM
    ``dual_consistency_attention(q, k, v, heads, weights=(0.7, 0.15, 0.15), masks=None, *, attention=None,
        mgdm="exclude")``
        One chunk (F, L, heads*d), frame 0 first -> (F, L, heads*d). Frame 0: plain self-attention; frame
        i >= 1: ``l1*A(Q_i,K_0,V_0) + l2*A(Q_i,K_{i-1},V_{i-1}) + l3*A(Q_i,K_i,V_i)``. ``masks`` (F, L) in
        [0, 1] turns on MGDM: ``mgdm="exclude"`` (character queries see only character keys, background only
        background) or ``mgdm="multiply"`` (keys/values multiplied by the mask resp. 1 - mask, the outputs
        blended by the query's mask).
    ``DCAPatch(weights=(0.7, 0.15, 0.15), masks=None, blocks=None, attention=None, mgdm="exclude")``
        ComfyUI ``attn1`` replace callable ``(q, k, v, extra_options) -> out``. ``masks`` (N, H, W) in [0, 1]
        indexed by frame, any resolution. ``blocks`` None = every ("output", *) block. Honors
        ``transformer_options["poseanimate"]`` (frame_ids, kv_carry, masks, mgdm; see docs/attention.md).
        ``patch.calls`` / ``patch.applied`` count calls per (block_name, block_id, block_index).

Cross-attention capture and masks
    ``AttentionMapStore()``: shared accumulator (deepcopy returns the same object); ``store.maps()`` ->
        (F, h, w) mean maps, ``store.frames()``, ``store.reset()``.
    ``CrossAttentionCapture(token_positions, store=None, factors=(4, 2), blocks=None, steps=None,
        sigma_range=None, attention=None)``: ComfyUI ``attn2`` replace callable; returns the normal output
        and records softmax(QK^T/sqrt(d)) of the chosen tokens, averaged over heads, tokens and layers,
        accumulated over the chosen steps, per frame, from the conditional chunk, on layers whose token
        grid is 1/factor of the latent.
    ``masks_from_attention_maps(maps, threshold="otsu", size=None, *, open_close=1, keep_largest=True,
        dilate=0)`` -> (F, H, W) float {0, 1}.
    ``find_token_positions(tokenizer, prompt, words)`` -> positions in the 77-token sequence (BOS = 0);
        ``tokenizer``: an HF CLIP tokenizer, or ComfyUI's CLIP / SD1Tokenizer / SDTokenizer.

Installing on a ComfyUI model (in a node)::

    from ..attention import DCAPatch, CrossAttentionCapture, install_patches
    m = model.clone()
    dca = DCAPatch(weights=(l1, l2, l3), masks=masks)          # masks: MASK (N, H, W) or None
    install_patches(m, dca=dca)                                  # attn1 on every output block with attention
    # or by hand: m.set_model_attn1_replace(dca, "output", block_id) for each block id

``install_patches(model, dca=None, capture=None)`` walks ``model.model.diffusion_model`` and calls
``set_model_attn1_replace`` / ``set_model_attn2_replace`` for every block with attention that the patch's
``blocks`` cover. Errors for bad arguments are ``ValueError`` whose message starts with the argument name.
"""
from .capture import AttentionMapStore, CrossAttentionCapture, token_maps
from .dca import (DEFAULT_WEIGHTS, MGDM_MODES, dca_chunk, dual_consistency_attention, sdpa_attention,
                  validate_mgdm, validate_weights)
from .masks import masks_from_attention_maps, otsu_threshold
from .patch import DCAPatch, check_image_masks, install_patches
from .tokens import find_token_positions

__all__ = [
    "DEFAULT_WEIGHTS",
    "MGDM_MODES",
    "AttentionMapStore",
    "CrossAttentionCapture",
    "DCAPatch",
    "check_image_masks",
    "dca_chunk",
    "dual_consistency_attention",
    "find_token_positions",
    "install_patches",
    "masks_from_attention_maps",
    "otsu_threshold",
    "sdpa_attention",
    "token_maps",
    "validate_mgdm",
    "validate_weights",
]
