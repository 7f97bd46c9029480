"""ComfyUI node classes (V1 API). This is the only layer that talks to the host.

One node (or one small family of nodes) per file; the maths lives in pata/, attention/ and pacm/.
The mappings below are literal dicts so that ComfyUI-Manager and the registry can read them statically.
"""
from .embedding_optimize import PoseAnimatePoseEmbeddingOptimize
from .inversion import PoseAnimatePoseAwareInversion
from .load_pose_sequence import PoseAnimateLoadPoseSequence
from .pata_align import PoseAnimatePATAAlign
from .sample_frames import PoseAnimateSampleFrames

NODE_CLASS_MAPPINGS = {
    "PoseAnimateLoadPoseSequence": PoseAnimateLoadPoseSequence,
    "PoseAnimatePATAAlign": PoseAnimatePATAAlign,
    "PoseAnimatePoseAwareInversion": PoseAnimatePoseAwareInversion,
    "PoseAnimatePoseEmbeddingOptimize": PoseAnimatePoseEmbeddingOptimize,
    "PoseAnimateSampleFrames": PoseAnimateSampleFrames,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PoseAnimateLoadPoseSequence": "Load Pose Sequence",
    "PoseAnimatePATAAlign": "PATA Align",
    "PoseAnimatePoseAwareInversion": "Pose-Aware Inversion",
    "PoseAnimatePoseEmbeddingOptimize": "Pose Embedding Optimize",
    "PoseAnimateSampleFrames": "Sample Frames",
}
