"""Cross-Attention Mask Extract without ComfyUI: input checks and the preview (the host test runs the capture)."""
from __future__ import annotations

import pytest
import torch

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.pipeline.types import PACMEmbeddings
from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract, _overlay


class _Clip:
    tokenizer = None


def _call(**kw):
    args = dict(model=None, control_net=None, clip=_Clip(), embeddings=PACMEmbeddings(None, None), prompt="a knight",
                subject="knight", threshold=0.0, capture_steps=0, window_size=0, dilate=1)
    args.update(kw)
    return PoseAnimateCrossAttentionMaskExtract().extract(**args)


@pytest.mark.parametrize("kw, where", [
    ({"embeddings": "nope"}, "input 'embeddings'"),
    ({"prompt": "  "}, "input 'prompt'"),
    ({"subject": " , "}, "input 'subject'"),
    ({}, "input 'clip'"),  # a CLIP without a tokenizer
])
def test_user_mistakes_name_the_input(kw, where):
    with pytest.raises(PoseAnimateError) as err:
        _call(**kw)
    assert str(err.value).startswith("Cross-Attention Mask Extract: ") and where in str(err.value)


def test_preview_marks_the_mask_outline():
    maps = torch.rand(2, 16, 16)
    masks = torch.zeros(2, 16, 16)
    masks[:, 4:12, 4:12] = 1
    img = _overlay(maps, masks)
    assert img.shape == (2, 16, 16, 3) and img.min() >= 0 and img.max() <= 1
    assert torch.equal(img[0, 3, 4], torch.ones(3))  # just outside the mask: white outline
    assert not torch.equal(img[0, 8, 8], torch.ones(3))
