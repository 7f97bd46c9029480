"""CI (no ComfyUI): the PACM nodes' pure parts — input checks, custom types, and signatures."""
from __future__ import annotations

import inspect
import sys

import pytest
import torch

from poseanimate.nodes._common import PoseAnimateError
from poseanimate.nodes.embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from poseanimate.nodes.host import types as T
from poseanimate.nodes.inversion import PoseAnimatePoseAwareInversion
from poseanimate.nodes.sample_frames import PoseAnimateSampleFrames

NODES = [PoseAnimatePoseAwareInversion, PoseAnimatePoseEmbeddingOptimize, PoseAnimateSampleFrames]


def test_host_adapter_imports_without_comfyui():
    import poseanimate.nodes.host  # noqa: F401

    if "comfy" not in sys.modules:  # CI: importing the adapter must not pull ComfyUI in
        assert not any(name == "comfy" or name.startswith("comfy.") for name in sys.modules)


@pytest.mark.parametrize("cls", NODES, ids=lambda c: c.__name__)
def test_every_input_is_a_parameter_of_the_function(cls):
    spec = cls.INPUT_TYPES()
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    names = list(spec["required"]) + list(spec.get("optional", {}))
    assert set(names) == set(params) - {"self"}
    for name in spec.get("optional", {}):
        assert params[name].default is None or params[name].default is not inspect.Parameter.empty
    assert cls.CATEGORY == "PoseAnimate/PACM"


def test_custom_types_chain_between_the_nodes():
    inv_out = dict(zip(PoseAnimatePoseAwareInversion.RETURN_NAMES, PoseAnimatePoseAwareInversion.RETURN_TYPES))
    assert inv_out == {"inversion": "POSEANIMATE_INVERSION", "reconstruction": "LATENT"}
    opt_in = PoseAnimatePoseEmbeddingOptimize.INPUT_TYPES()["required"]
    assert opt_in["inversion"][0] == "POSEANIMATE_INVERSION" and opt_in["poses"][0] == "IMAGE"
    assert PoseAnimatePoseEmbeddingOptimize.RETURN_TYPES == ("POSEANIMATE_EMBEDDINGS",)
    smp_in = PoseAnimateSampleFrames.INPUT_TYPES()
    assert smp_in["required"]["embeddings"][0] == "POSEANIMATE_EMBEDDINGS"
    assert smp_in["optional"]["masks"][0] == "MASK"
    assert PoseAnimateSampleFrames.RETURN_TYPES == ("LATENT",)
    for cls in NODES:
        spec = cls.INPUT_TYPES()["required"]
        assert spec["model"][0] == "MODEL" and spec["control_net"][0] == "CONTROL_NET"
        assert spec["positive"][0] == "CONDITIONING"


def test_latent_samples():
    x = torch.zeros(1, 4, 8, 8)
    assert T.latent_samples({"samples": x}, "N") is x
    with pytest.raises(PoseAnimateError, match=r"^N: input 'latent': the latent batch holds 3 images.*Fix:"):
        T.latent_samples({"samples": torch.zeros(3, 4, 8, 8)}, "N")
    with pytest.raises(PoseAnimateError, match="16 channels"):
        T.latent_samples({"samples": torch.zeros(1, 16, 8, 8)}, "N")
    with pytest.raises(PoseAnimateError, match="VAE Encode"):
        T.latent_samples(torch.zeros(1, 4, 8, 8), "N")


def test_image_to_hints():
    img = torch.rand(3, 16, 12, 4)
    hints = T.image_to_hints(img, "N", "poses", min_count=2)
    assert hints.shape == (3, 3, 16, 12)
    assert torch.equal(hints[1, 2], img[1, :, :, 2])
    with pytest.raises(PoseAnimateError, match=r"^N: input 'poses': got 1 pose image\(s\), need at least 2"):
        T.image_to_hints(img[:1], "N", "poses", min_count=2)
    with pytest.raises(PoseAnimateError, match=r"input 'poses': expected an IMAGE"):
        T.image_to_hints(torch.rand(3, 16, 12), "N", "poses")


def test_check_same_prompt():
    ref = torch.randn(77, 768)
    T.check_same_prompt(ref[None].clone(), ref, "N")
    with pytest.raises(PoseAnimateError, match=r"^N: input 'positive': this conditioning is not the prompt"):
        T.check_same_prompt(ref[None] + 0.1, ref, "N")
    with pytest.raises(PoseAnimateError):
        T.check_same_prompt(torch.randn(1, 154, 768), ref, "N")


def test_embeddings_frames():
    class _Poses:
        uncond = torch.zeros(4, 2, 77, 768)

    from poseanimate.pipeline.types import PACMEmbeddings

    assert PACMEmbeddings(inversion=None, poses=_Poses()).frames == 5


def test_extra_control_residuals_land_on_the_cond_rows_only():
    from poseanimate.nodes.host.adapter import _merge_rows

    pose = {"input": [torch.ones(4, 2, 3, 3), None], "middle": [torch.ones(4, 5, 1, 1)], "output": []}
    extra = {"input": [torch.full((2, 2, 3, 3), 2.0), torch.full((2, 2, 3, 3), 3.0)], "middle": [None],
             "output": [torch.full((2, 1, 1, 1), 4.0)]}
    rows = torch.tensor([2, 3])  # batch [uncond f0, uncond f1, cond f0, cond f1]
    out = _merge_rows(pose, extra, rows, 4)
    assert out["input"][0][:2].eq(1).all() and out["input"][0][2:].eq(3).all()
    assert out["input"][1][:2].eq(0).all() and out["input"][1][2:].eq(3).all()
    assert out["middle"][0] is pose["middle"][0]
    assert out["output"][0].flatten().tolist() == [0, 0, 4, 4]
    assert pose["input"][0].eq(1).all()  # out of place: the pose ControlNet's residuals are not written to
    assert _merge_rows(None, extra, rows, 4)["input"][0][:2].eq(0).all()


def test_cfg_nodes_take_an_optional_negative_and_mask_extract_an_optional_positive():
    from poseanimate.nodes.mask_extract import PoseAnimateCrossAttentionMaskExtract as X

    spec = X.INPUT_TYPES()
    assert spec["optional"]["positive"][0] == "CONDITIONING"
    assert inspect.signature(X.extract).parameters["positive"].default is None
    for cls in NODES + [X]:
        negative = cls.INPUT_TYPES()["optional"]["negative"]
        assert negative[0] == "CONDITIONING" and "replaces the unconditional text embedding" in negative[1]["tooltip"]
        assert inspect.signature(getattr(cls, cls.FUNCTION)).parameters["negative"].default is None
    for cls in (X, PoseAnimateSampleFrames):
        assert "0 = auto" in cls.INPUT_TYPES()["required"]["window_size"][1]["tooltip"], cls
