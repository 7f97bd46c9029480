"""DCA Patch Model without ComfyUI: block selection, weights, masks and the clone-only contract on a stand-in
ModelPatcher whose UNet has ComfyUI's block layout (the host test runs it in a real ComfyUI sampler)."""
from __future__ import annotations

import copy

import pytest
import torch

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.dca_patch import PoseAnimateDCAPatchModel, parse_block_list


class SpatialTransformer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer_blocks = torch.nn.ModuleList([torch.nn.Identity()])


def _blocks(n, with_attn):
    return torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Identity(), *([SpatialTransformer()] if i in with_attn
                                                                               else [])) for i in range(n)])


class FakeUNet(torch.nn.Module):
    def __init__(self, output_attn=range(3, 12)):
        super().__init__()
        self.input_blocks = _blocks(12, {1, 2, 4, 5, 7, 8})
        self.middle_block = torch.nn.Sequential(SpatialTransformer())
        self.output_blocks = _blocks(12, set(output_attn))


class FakePatcher:
    def __init__(self, unet):
        self.model = torch.nn.Module()
        self.model.diffusion_model = unet
        self.model_options = {"transformer_options": {}}

    def clone(self):
        c = FakePatcher.__new__(FakePatcher)
        c.model = self.model
        c.model_options = copy.deepcopy(self.model_options)
        return c

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        to = self.model_options["transformer_options"]
        to.setdefault("patches_replace", {}).setdefault("attn1", {})[key] = patch


def _run(model, blocks="all output blocks", custom="output 3-11", weights=(0.7, 0.15, 0.15), masks=None):
    return PoseAnimateDCAPatchModel().patch(model, *weights, blocks, custom, masks)[0]


def _attn1(m):
    return m.model_options["transformer_options"]["patches_replace"]["attn1"]


def test_patches_every_output_block_with_attention_on_a_clone():
    model = FakePatcher(FakeUNet())
    patched = _run(model)
    assert patched is not model and model.model_options == {"transformer_options": {}}
    keys = sorted(_attn1(patched))
    assert keys == [("output", i) for i in range(3, 12)]
    patch = _attn1(patched)[("output", 3)]
    assert patch.weights == pytest.approx((0.7, 0.15, 0.15)) and patch.masks is None


def test_tiny_layout_and_sd15_choice():
    tiny = FakePatcher(FakeUNet(output_attn=(0, 1)))
    assert sorted(_attn1(_run(tiny))) == [("output", 0), ("output", 1)]
    with pytest.raises(PoseAnimateError, match="DCA Patch Model: blocks: .*no attention in output blocks 3-11"):
        _run(tiny, "SD1.5 output 3-11")
    assert sorted(_attn1(_run(FakePatcher(FakeUNet()), "SD1.5 output 3-11"))) == [("output", i) for i in range(3, 12)]


def test_custom_blocks():
    patched = _run(FakePatcher(FakeUNet()), "custom", "output 6-8, input 4, middle 0")
    assert sorted(_attn1(patched)) == sorted([("output", 6), ("output", 7), ("output", 8), ("input", 4),
                                              ("middle", 0)])
    with pytest.raises(PoseAnimateError, match="custom_blocks: output 2 has no self-attention"):
        _run(FakePatcher(FakeUNet()), "custom", "output 2-4")
    with pytest.raises(PoseAnimateError, match="custom_blocks: cannot read"):
        _run(FakePatcher(FakeUNet()), "custom", "decoder everything")
    assert parse_block_list("3-5; 9") == [("output", 3), ("output", 4), ("output", 5), ("output", 9)]
    assert parse_block_list("input 1, 2, output_blocks 0") == [("input", 1), ("input", 2), ("output", 0)]


def test_weights_are_relative_and_checked():
    patch = _attn1(_run(FakePatcher(FakeUNet()), weights=(2.0, 1.0, 1.0)))[("output", 3)]
    assert patch.weights == pytest.approx((0.5, 0.25, 0.25))
    with pytest.raises(PoseAnimateError, match="input 'first_frame_weight'"):
        _run(FakePatcher(FakeUNet()), weights=(0.0, 0.0, 0.0))


def test_masks_turn_on_mgdm_and_are_validated():
    masks = torch.zeros(4, 64, 64)
    masks[:, 16:48, 16:48] = 1
    patch = _attn1(_run(FakePatcher(FakeUNet()), masks=masks))[("output", 3)]
    assert patch.masks is not None and patch.masks.shape == (4, 64, 64)
    with pytest.raises(PoseAnimateError, match="DCA Patch Model: input 'masks': values must lie in"):
        _run(FakePatcher(FakeUNet()), masks=masks * 3)


def test_not_a_model():
    with pytest.raises(PoseAnimateError, match="input 'model'"):
        _run(object())


def test_patch_survives_deepcopy_and_runs():
    """ComfyUI deep-copies model_options on clone(); the patch must still compute on q, k, v."""
    patched = _run(FakePatcher(FakeUNet())).clone()
    patch = _attn1(patched)[("output", 4)]
    q = torch.randn(3, 16, 8)
    out = patch(q, q, q, {"n_heads": 2, "block": ("output", 4), "block_index": 0, "cond_or_uncond": [0],
                          "original_shape": [3, 4, 4, 4]})
    assert out.shape == q.shape
    assert sum(patch.applied.values()) == 1
