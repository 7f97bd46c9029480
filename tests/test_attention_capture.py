"""Cross-attention capture, masks from maps and token lookup (with a small fake CLIP tokenizer)."""
from __future__ import annotations

import copy
import re

import pytest
import torch

from attention import (AttentionMapStore, CrossAttentionCapture, find_token_positions,
                       masks_from_attention_maps, sdpa_attention, token_maps)

HEADS = 2


def _opts(cond_or_uncond, block=("output", 3), latent=(8, 8), sigma=None, **pa):
    o = {"n_heads": HEADS, "dim_head": 8, "attn_precision": None, "block": block, "block_index": 0,
         "original_shape": [len(cond_or_uncond), 4, *latent], "cond_or_uncond": list(cond_or_uncond)}
    if sigma is not None:
        o["sigmas"] = torch.tensor([sigma])
    if pa:
        o["poseanimate"] = pa
    return o


def _probs64(q, k, heads, positions):
    """float64 reference: softmax(QK^T/sqrt(d)) per head, mean over heads and chosen positions, per frame."""
    f, L, C = q.shape
    d = C // heads
    qh = q.double().reshape(f, L, heads, d).transpose(1, 2)
    kh = k.double().reshape(f, -1, heads, d).transpose(1, 2)
    p = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, -1)
    return p[..., positions].mean(dim=(1, 3))


def test_token_maps_matches_reference_in_small_groups():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 16, 16, generator=g), torch.randn(3, 77, 16, generator=g)
    ref = _probs64(q, k, HEADS, [2, 5])
    got = token_maps(q, k, HEADS, [2, 5], max_bytes=1)  # one frame at a time
    assert torch.allclose(got.double(), ref, atol=1e-6)


def test_capture_records_cond_chunk_per_frame_and_returns_normal_output():
    g = torch.Generator().manual_seed(1)
    frames, L = 3, 16  # latent 16x16 -> factor 4 grid 4x4 = 16 tokens
    q = torch.randn(2 * frames, L, 16, generator=g)
    k = torch.randn(2 * frames, 77, 16, generator=g)
    v = torch.randn(2 * frames, 77, 16, generator=g)
    store = AttentionMapStore()
    cap = CrossAttentionCapture([4, 5], store=store)
    out = cap(q, k, v, _opts([1, 0], latent=(16, 16)))
    assert torch.allclose(out, sdpa_attention(q, k, v, HEADS), atol=1e-6)
    assert store.frames() == [0, 1, 2] and store.size == (8, 8)  # finest factor 2 -> 8x8 store grid
    ref = _probs64(q[frames:], k[frames:], HEADS, [4, 5]).reshape(frames, 1, 4, 4).float()
    ref = torch.nn.functional.interpolate(ref, size=(8, 8), mode="bilinear", align_corners=False).squeeze(1)
    assert torch.allclose(store.maps(), ref, atol=1e-6)
    # the uncond chunk is not what was recorded
    unc = _probs64(q[:frames], k[:frames], HEADS, [4, 5])
    assert not torch.allclose(_probs64(q[frames:], k[frames:], HEADS, [4, 5]), unc, atol=1e-3)


def test_capture_selects_by_resolution_block_and_step():
    g = torch.Generator().manual_seed(2)
    store = AttentionMapStore()
    cap = CrossAttentionCapture([1], store=store, steps=[1])
    q16, k = torch.randn(2, 16, 16, generator=g), torch.randn(2, 77, 16, generator=g)
    q64 = torch.randn(2, 64, 16, generator=g)
    q256 = torch.randn(2, 256, 16, generator=g)
    for sigma in (10.0, 5.0, 2.0):
        cap(q16, k, k, _opts([0], latent=(16, 16), sigma=sigma))  # factor 4: recorded at step 1 only
        cap(q64, k, k, _opts([0], latent=(16, 16), sigma=sigma, block=("output", 6)))  # factor 2
        cap(q256, k, k, _opts([0], latent=(16, 16), sigma=sigma, block=("output", 9)))  # factor 1: never
        cap(q16, k, k, _opts([0], latent=(16, 16), sigma=sigma, block=("input", 4)))  # not an output block
    assert store.count(0) == 2 and store.count(1) == 2
    assert dict(cap.applied) == {("output", 3, 0): 1, ("output", 6, 0): 1}
    assert sum(cap.calls.values()) == 12


def test_capture_call_count_steps_without_sigmas():
    store = AttentionMapStore()
    cap = CrossAttentionCapture([1], store=store, steps=[0, 2], factors=None)
    q, k = torch.randn(1, 16, 16), torch.randn(1, 77, 16)
    for _ in range(4):  # four model evaluations, two layers each
        cap(q, k, k, _opts([0], latent=(4, 4)))
        cap(q, k, k, _opts([0], latent=(4, 4), block=("output", 4)))
    assert store.count(0) == 4 and store.step == 3


def test_capture_state_survives_deepcopy_and_uses_frame_ids():
    store = AttentionMapStore()
    cap = CrossAttentionCapture([3], store=store, factors=None)
    opts = {"transformer_options": {"patches_replace": {"attn2": {("output", 3): cap}}}}
    clone = copy.deepcopy(opts)["transformer_options"]["patches_replace"]["attn2"][("output", 3)]
    assert clone is not cap and clone.store is store
    q, k = torch.randn(4, 16, 16), torch.randn(4, 77, 16)
    clone(q, k, k, _opts([1, 0], latent=(4, 4), frame_ids=[5, 6], kv_carry={}))
    assert store.frames() == [5, 6] and cap.applied[("output", 3, 0)] == 1
    with pytest.raises(ValueError, match="^frames: .*\\[0\\]"):
        store.maps([0, 5])
    with pytest.raises(ValueError, match="^token_positions: "):
        CrossAttentionCapture([])


# -- masks -------------------------------------------------------------------------------------------------

def _blob_maps(frames=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    maps, truth = [], []
    for f in range(frames):
        cy, cx = 14 + f, 12 + 2 * f
        blob = (((yy - cy) / 8) ** 2 + ((xx - cx) / 6) ** 2 <= 1).float()
        m = blob * 0.8 + torch.rand(h, w, generator=g) * 0.3
        m[2, 28] = 1.0  # a bright speck far from the character
        maps.append(m)
        truth.append(blob)
    return torch.stack(maps), torch.stack(truth)


def test_masks_from_synthetic_maps_otsu():
    maps, truth = _blob_maps()
    masks = masks_from_attention_maps(maps)
    assert masks.shape == truth.shape and set(masks.unique().tolist()) <= {0.0, 1.0}
    iou = (masks * truth).sum((1, 2)) / ((masks + truth) > 0).float().sum((1, 2))
    assert (iou > 0.9).all(), iou
    assert masks[:, 2, 28].eq(0).all()  # speck removed (opening / largest component)


def test_masks_fixed_threshold_resize_dilate_and_largest_component():
    maps = torch.zeros(1, 16, 16)
    maps[0, 2:8, 2:8] = 1.0  # big component
    maps[0, 11:14, 11:14] = 1.0  # small one
    m = masks_from_attention_maps(maps, threshold=0.5, open_close=0)
    assert m[0, 2:8, 2:8].eq(1).all() and m[0, 11:14, 11:14].eq(0).all()
    both = masks_from_attention_maps(maps, threshold=0.5, open_close=0, keep_largest=False)
    assert both[0, 11:14, 11:14].eq(1).all()
    d = masks_from_attention_maps(maps, threshold=0.5, open_close=0, dilate=1)
    assert d[0].sum() == 8 * 8
    big = masks_from_attention_maps(maps, threshold=0.5, open_close=0, size=(64, 48))
    assert big.shape == (1, 64, 48) and abs(big[0].mean().item() - m[0].mean().item()) < 0.02
    assert masks_from_attention_maps(torch.ones(2, 8, 8)).sum() == 0  # constant maps: no character


@pytest.mark.parametrize("kwargs, name", [({"threshold": "mean"}, "threshold"), ({"threshold": 1.5}, "threshold"),
                                          ({"size": (0, 4)}, "size"), ({"dilate": -1}, "dilate")])
def test_masks_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        masks_from_attention_maps(torch.rand(1, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="^maps: "):
        masks_from_attention_maps(torch.rand(2, 2, 8, 8))


# -- token lookup --------------------------------------------------------------------------------------------

class FakeCLIPTokenizer:
    """HF-style: callable -> {"input_ids": [BOS, ids..., EOS]}; lower-cases, splits words and punctuation,
    and spells unknown long words as two pieces (like BPE)."""
    BOS, EOS = 49406, 49407

    def __init__(self):
        self.vocab = {}

    def _id(self, piece):
        return self.vocab.setdefault(piece, 100 + len(self.vocab))

    def __call__(self, text):
        ids = []
        for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()):
            if len(w) > 8:
                ids += [self._id(w[:5]), self._id(w[5:] + "</w>")]
            else:
                ids.append(self._id(w + "</w>"))
        return {"input_ids": [self.BOS, *ids, self.EOS]}


class FakeSDTokenizer:
    """Shaped like ComfyUI's SDTokenizer: .tokenizer, .tokens_start, tokenize_with_weights (weights parsed)."""

    def __init__(self):
        self.tokenizer = FakeCLIPTokenizer()
        self.tokens_start, self.start_token, self.end_token, self.pad_token = 1, 49406, 49407, 49407

    def tokenize_with_weights(self, text, return_word_ids=False, **kw):
        plain = re.sub(r"\(([^():]+):[0-9.]+\)", r"\1", text)
        ids = self.tokenizer(plain)["input_ids"]
        ids = ids + [self.pad_token] * (77 - len(ids))
        return [[(t, 1.0) for t in ids[:77]]]


class FakeSD1Tokenizer:
    def __init__(self):
        self.clip_name, self.clip = "l", "clip_l"
        self.clip_l = FakeSDTokenizer()


def test_token_positions_hf_style():
    tok = FakeCLIPTokenizer()
    prompt = "a girl in a red dress, the girl dances"
    #          1   2   3  4  5   6    7  8   9    10
    assert find_token_positions(tok, prompt, "girl") == [2, 9]  # appears twice: all positions
    assert find_token_positions(tok, prompt, "red dress") == [5, 6]
    assert find_token_positions(tok, prompt, ["girl", "dress"]) == [2, 6, 9]
    assert find_token_positions(tok, prompt, "Girl, dances") == [2, 9, 10]


def test_token_positions_multi_token_word_and_encode_api():
    class EncodeOnly:
        def __init__(self):
            self.inner = FakeCLIPTokenizer()

        def encode(self, text):
            return self.inner(text)["input_ids"]

    tok = EncodeOnly()
    assert find_token_positions(tok, "an astronaut riding", "astronaut") == [2, 3]


def test_token_positions_comfy_tokenizers_parse_weights():
    prompt = "a (girl:1.3) dancing on the beach"
    for tok in (FakeSDTokenizer(), FakeSD1Tokenizer(), type("CLIP", (), {"tokenizer": FakeSD1Tokenizer()})()):
        assert find_token_positions(tok, prompt, "girl") == [2]
        assert find_token_positions(tok, prompt, "beach") == [6]


def test_token_positions_absent_word_and_bad_input():
    tok = FakeCLIPTokenizer()
    with pytest.raises(ValueError, match=r"^words: 'cat' is not in the prompt.*use a word"):
        find_token_positions(tok, "a girl dancing", "girl, cat")
    with pytest.raises(ValueError, match="^words: "):
        find_token_positions(tok, "a girl dancing", " , ")
    long_prompt = " ".join(["word"] * 80) + " cat"
    with pytest.raises(ValueError, match="^words: 'cat' is not in the prompt's first 77 tokens"):
        find_token_positions(tok, long_prompt, "cat")
