"""ComfyUI node classes (V1 API). This is the only layer that talks to the host.

One node (or one small family of nodes) per file; the maths lives in pata/, attention/ and pacm/.
The mappings below are literal dicts so that ComfyUI-Manager and the registry can read them statically.
"""
from .dca_patch import PoseAnimateDCAPatchModel
from .embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from .inversion import PoseAnimatePoseAwareInversion
from .load_pose_sequence import PoseAnimateLoadPoseSequence
from .mask_extract import PoseAnimateCrossAttentionMaskExtract
from .pata_align import PoseAnimatePATAAlign
from .pose_extract import PoseAnimatePoseExtract
from .sample_frames import PoseAnimateSampleFrames
from .save_pose_sequence import PoseAnimateSavePoseSequence

NODE_CLASS_MAPPINGS = {
    "PoseAnimateLoadPoseSequence": PoseAnimateLoadPoseSequence,
    "PoseAnimatePoseExtract": PoseAnimatePoseExtract,
    "PoseAnimatePATAAlign": PoseAnimatePATAAlign,
    "PoseAnimateSavePoseSequence": PoseAnimateSavePoseSequence,
    "PoseAnimatePoseAwareInversion": PoseAnimatePoseAwareInversion,
    "PoseAnimatePoseEmbeddingOptimize": PoseAnimatePoseEmbeddingOptimize,
    "PoseAnimateCrossAttentionMaskExtract": PoseAnimateCrossAttentionMaskExtract,
    "PoseAnimateDCAPatchModel": PoseAnimateDCAPatchModel,
    "PoseAnimateSampleFrames": PoseAnimateSampleFrames,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PoseAnimateLoadPoseSequence": "Load Pose Sequence",
    "PoseAnimatePoseExtract": "Pose Extract",
    "PoseAnimatePATAAlign": "PATA Align",
    "PoseAnimateSavePoseSequence": "Save Pose Sequence",
    "PoseAnimatePoseAwareInversion": "Pose-Aware Inversion",
    "PoseAnimatePoseEmbeddingOptimize": "Pose Embedding Optimize",
    "PoseAnimateCrossAttentionMaskExtract": "Cross-Attention Mask Extract",
    "PoseAnimateDCAPatchModel": "DCA Patch Model",
    "PoseAnimateSampleFrames": "Sample Frames",
}
