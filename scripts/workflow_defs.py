"""The bundled workflows, one compact function each; ``scripts/make_workflows.py`` renders them.

Every function receives an empty ``Graph`` (node specs attached) and returns it filled. Titles matter: the
headless command finds the nodes it edits by type and title ("Source image", "Prompt", "Negative prompt",
"Pose sequence", "Source pose", "Resize source"), so keep them when you edit a workflow.

The source pose comes from a pose file through Load Pose Sequence, not from Pose Extract: Pose Extract needs
the optional package controlnet-aux, whose requirements (torchvision, timm, scikit-image,
opencv-python-headless, huggingface_hub) do not sit well beside ComfyUI's torch -- in a ComfyUI Python with
torch 2.13.0, `pip install --dry-run controlnet-aux` would replace torch with 2.14.1 and add the CUDA 13
libraries. So the bundled workflows run after the README's install, and Pose Extract stays the documented
alternative (see docs/workflows.md). The one exception is ``dwpose``: it finds both poses inside the graph with
DWPose Estimator, so it declares the custom node pack comfyui_controlnet_aux (``g.requires``; its node specs are
checked in tests/data/third_party_nodes.json) and says so in its note.
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline import FAST, FULL, FULL_SDXL  # noqa: E402  (the settings that ship, shared with the node defaults)

CKPT = "v1-5-pruned-emaonly.safetensors"
OPENPOSE = "control_v11p_sd15_openpose.pth"
CANNY = "control_v11p_sd15_canny.pth"
CKPT_SDXL = "sd_xl_base_1.0.safetensors"
OPENPOSE_SDXL = "controlnet-openpose-sdxl-1.0.safetensors"
LORA = "your_style_lora.safetensors"
POSE_FILE = "examples/walk.json"
SOURCE_POSE_FILE = "examples/character.json"
PROMPT = "a young woman in a red dress and white sneakers, full body, plain studio background, best quality"
NEGATIVE = "blurry, deformed, extra limbs, bad anatomy, lowres, watermark"
SUBJECT = "woman"

MODEL_FILES = f"""
### Models
- **Load Checkpoint**: any SD1.5 checkpoint or fine-tune (default name `{CKPT}`), in `models/checkpoints`.
- **Load OpenPose ControlNet**: an SD1.5 OpenPose ControlNet, e.g. `{OPENPOSE}`, in `models/controlnet`.
"""
MODELS_NOTE = MODEL_FILES + """
PoseAnimate is training-free: nothing is trained, and these workflows download nothing. (Pose Extract, if
you add it, downloads the OpenPose annotator weights `lllyasviel/Annotators` on its first run.)
"""
DWPOSE_MODELS_NOTE = MODEL_FILES + """
PoseAnimate is training-free: nothing is trained. DWPose Estimator downloads its detector weights on its first
run (see How to use).
"""

HOW_NOTE = """
### PoseAnimate — how to use
1. **Source image**: one picture of the character (full body works best).
2. **Prompt**: describe the picture (with MGDM on, name the character with the word in **Subject**).
3. **Pose sequence**: a bundled example (`examples/...`) or a POSE_KEYPOINT / OpenPose JSON file you put in
   ComfyUI's `input` folder.
4. **Source pose**: the pose of the character in your picture, as a POSE_KEYPOINT / OpenPose JSON file in
   ComfyUI's `input` folder. The default `examples/character.json` is a sample (one standing figure on a
   640x640 canvas); it fits only a picture of a character standing that way. To find the pose in the picture
   inside the graph instead, add *DWPose Estimator* (comfyui_controlnet_aux) or this pack's *Pose Extract*
   (needs `pip install controlnet-aux`, which is not installed with the pack because it pulls its own
   torchvision/timm; it downloads annotator weights on first use) on **Resize source** and connect its
   POSE_KEYPOINT to PATA Align's `source_pose`.
5. Queue. Frames land in `output/PoseAnimate/`, the MP4 next to them. Frame 0 is the source, then the
   transition frames, then the target poses.

Pipeline (Zhu et al., IJCAI 2024): **PATA Align** fits the target poses to the source character →
**Pose-Aware Inversion** inverts the source under its own pose → **Pose Embedding Optimize** tunes
per-frame embeddings for every target pose → (optional: **Cross-Attention Mask Extract** finds the character)
→ **DCA Patch Model** (DCAM, + MGDM with masks) → **Sample Frames**. Frame 0 is the source.
"""


MGDM_NOTE = ("""- MGDM (mask-guided decoupling) is on: **Cross-Attention Mask Extract** finds the character from the
  **Subject** word's cross-attention, united with a body drawn from each frame's skeleton. Check **Mask check**;
  a cut-out source image (transparent background) gives frame 0 its own mask.""" if FULL.use_masks else
             """- MGDM (mask-guided decoupling) is off: on the StickWorld benchmark it did not beat DCAM alone on both
  identity and background (docs/stickworld.md). To try it, add **Cross-Attention Mask Extract** (connect
  PATA Align's `aligned_pose` for the body prior) and connect its masks to **DCA Patch Model**.""")


def _loaders(g, lora=False, ckpt_name=CKPT, openpose=OPENPOSE):
    ckpt = g.node("CheckpointLoaderSimple", title="Load Checkpoint", ckpt_name=ckpt_name)
    model, clip = ckpt.out("MODEL"), ckpt.out("CLIP")
    if lora:
        lo = g.node("LoraLoader", title="Load LoRA", model=model, clip=clip, lora_name=LORA,
                    strength_model=0.8, strength_clip=0.8)
        model, clip = lo.out("MODEL"), lo.out("CLIP")
    cnet = g.node("ControlNetLoader", title="Load OpenPose ControlNet", control_net_name=openpose)
    return model, clip, ckpt.out("VAE"), cnet.out()


def _pose_files(g, recipe, resized, pose_file):
    """The target poses and the source pose from pose files (two Load Pose Sequence nodes)."""
    seq = g.node("PoseAnimateLoadPoseSequence", title="Pose sequence", pose_file=pose_file,
                 frames=recipe.pose_frames)
    source_pose = g.node("PoseAnimateLoadPoseSequence", title="Source pose", pose_file=SOURCE_POSE_FILE)
    return source_pose.out("pose"), seq.out("pose")


def _pipeline(g, recipe, *, window=None, frames_per_batch=0, lora=False, fps=8.0, prefix="PoseAnimate",
              pose_file=POSE_FILE, find_poses=None, ckpt_name=CKPT, openpose=OPENPOSE):
    """The paper's pipeline with a ``pipeline.Recipe``'s node settings; returns the interesting node outputs.
    ``find_poses(g, recipe, resized)`` makes the (source pose, target poses) POSE_KEYPOINT outputs (default: from
    pose files). With ``recipe.use_masks`` the masks of Cross-Attention Mask Extract (attention + the
    skeleton's body prior, the source image's own mask for frame 0 when it has one) turn on MGDM in DCA Patch
    Model."""
    window = recipe.window if window is None else window
    model, clip, vae, cnet = _loaders(g, lora, ckpt_name, openpose)
    image = g.node("LoadImage", title="Source image", image="example.png")
    resized = g.node("ImageScale", title="Resize source", image=image.out("IMAGE"), upscale_method="lanczos",
                     width=recipe.size, height=recipe.size, crop="center")
    prompt = g.node("PrimitiveStringMultiline", title="Prompt", value=PROMPT)
    positive = g.node("CLIPTextEncode", title="Positive prompt", text=prompt.out(), clip=clip)
    # as a KSampler takes it: its ControlNets (SDXL: its pooled output) act on the unconditional rows; its text is
    # replaced by the optimised embeddings
    negative = g.node("CLIPTextEncode", title="Negative prompt", text=NEGATIVE, clip=clip)

    if find_poses is None:
        source_pose, target_pose = _pose_files(g, recipe, resized, pose_file)
    else:
        source_pose, target_pose = find_poses(g, recipe, resized)
    align = g.node("PoseAnimatePATAAlign", title="PATA Align", source_pose=source_pose, target_pose=target_pose,
                   transition_frames=recipe.transition_frames, mode=recipe.pata_mode, repair=recipe.repair,
                   width=recipe.size, height=recipe.size)  # = Resize source (a pose file has its own canvas)
    poses = align.out("pose_images")

    latent = g.node("VAEEncode", title="Encode source", pixels=resized.out(), vae=vae)
    inversion = g.node("PoseAnimatePoseAwareInversion", title="Pose-Aware Inversion", model=model,
                       control_net=cnet, latent=latent.out(), positive=positive.out(), source_pose=poses,
                       steps=recipe.steps, cfg=recipe.cfg, inner_steps=recipe.inversion_inner_steps,
                       negative=negative.out())
    recon = g.node("VAEDecode", title="Decode reconstruction", samples=inversion.out("reconstruction"), vae=vae)
    g.node("PreviewImage", title="Inversion check (should look like the source)", images=recon.out())
    emb = g.node("PoseAnimatePoseEmbeddingOptimize", title="Pose Embedding Optimize", inversion=inversion.out(),
                 model=model, control_net=cnet, positive=positive.out(), poses=poses, inner_steps=recipe.inner_steps,
                 frames_per_batch=frames_per_batch, schedule=recipe.schedule,
                 keyframe_interval=recipe.keyframe_interval, negative=negative.out())
    dca_inputs = {}
    if recipe.use_masks:
        # the source image's own mask (a cut-out's alpha; LoadImage's MASK is 1 where transparent), resized as
        # the image is; a picture without alpha gives a full mask, which Mask Extract ignores
        inverted = g.node("InvertMask", title="Source mask (alpha)", mask=image.out("MASK"))
        as_image = g.node("MaskToImage", title="Source mask as image", mask=inverted.out())
        scaled = g.node("ImageScale", title="Resize source mask", image=as_image.out(), upscale_method="bilinear",
                        width=recipe.size, height=recipe.size, crop="center")
        src_mask = g.node("ImageToMask", title="Source mask", image=scaled.out(), channel="red")
        mx = g.node("PoseAnimateCrossAttentionMaskExtract", title="Cross-Attention Mask Extract", model=model,
                    control_net=cnet, clip=clip, embeddings=emb.out(), prompt=prompt.out(), subject=SUBJECT,
                    threshold=recipe.threshold, capture_steps=recipe.capture_steps, window_size=window,
                    dilate=recipe.dilate, source_mask=src_mask.out(), pose_keypoint=align.out("aligned_pose"),
                    positive=positive.out(), negative=negative.out())
        g.node("PreviewImage", title="Mask check", images=mx.out("preview"))
        dca_inputs = {"masks": mx.out("masks"), "mgdm": recipe.mgdm}
    dca = g.node("PoseAnimateDCAPatchModel", title="DCA Patch Model", model=model,
                 first_frame_weight=recipe.weights[0], previous_frame_weight=recipe.weights[1],
                 own_frame_weight=recipe.weights[2], blocks=recipe.blocks, **dca_inputs)
    # the background hold's bodies from PATA's keypoints (without them Sample Frames draws them from the pose images)
    hold = {"pose_keypoint": align.out("aligned_pose")} if recipe.hold_background and recipe.hold_source == "keypoints" \
        else {}
    frames = g.node("PoseAnimateSampleFrames", title="Sample Frames", model=dca.out(), control_net=cnet,
                    positive=positive.out(), embeddings=emb.out(), window_size=window,
                    uncond_pose=recipe.uncond_pose, hold_background=recipe.hold_background,
                    hold_dilate=recipe.hold_dilate, negative=negative.out(), **hold)
    decoded = g.node("VAEDecode", title="Decode frames", samples=frames.out(), vae=vae)
    return dict(model=model, clip=clip, vae=vae, cnet=cnet, positive=positive, negative=negative, prompt=prompt,
                poses=poses, dca=dca, decoded=decoded, fps=fps, prefix=prefix)


def _save(g, images, fps, prefix):
    g.node("SaveImage", title="Save frames", images=images, filename_prefix=f"{prefix}/frame")
    video = g.node("CreateVideo", title="Create video", images=images, fps=fps)
    g.node("SaveVideo", title="Save video", video=video.out(), filename_prefix=f"{prefix}/video", format="mp4",
           codec="h264")


# ---- the workflows ---------------------------------------------------------------------------------------------


def full(g):
    p = _pipeline(g, FULL)
    _save(g, p["decoded"].out(), p["fps"], p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note(MODELS_NOTE, title="Models")
    g.note(f"""
### Settings
- The paper's settings: {FULL.frames} frames ({FULL.pose_frames} walk poses taken evenly from the file's 40 +
  {FULL.transition_frames} PATA transition frames + the source), {FULL.steps} DDIM steps, CFG {FULL.cfg},
  {FULL.inner_steps} inner iterations per step for the inversion and for each frame. Set **Pose sequence**'s
  `frames` to 0 to animate every pose of the file.
- DCA weights {FULL.weights[0]} / {FULL.weights[1]} / {FULL.weights[2]} (source / previous / own frame) on every
  decoder attention block.
{MGDM_NOTE}
- **Inversion check** should look like your source image; if not, raise the inversion's inner steps.
""", title="Settings")
    return g


def full_sdxl(g):
    p = _pipeline(g, FULL_SDXL, prefix="PoseAnimate/sdxl", ckpt_name=CKPT_SDXL, openpose=OPENPOSE_SDXL)
    _save(g, p["decoded"].out(), p["fps"], p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note(f"""
### Models (SDXL family)
- **Load Checkpoint**: an SDXL-family checkpoint: SDXL base, Illustrious, Pony, NoobAI, their fine-tunes and
  merges (default name `{CKPT_SDXL}`), in `models/checkpoints`. LoRAs for it are welcome.
- **Load OpenPose ControlNet**: an SDXL OpenPose ControlNet, e.g. xinsir's controlnet-openpose-sdxl-1.0
  (default name `{OPENPOSE_SDXL}`), thibaud's OpenPoseXL2, or a union ControlNet set to OpenPose, in
  `models/controlnet`.
- The PACM nodes detect SDXL from the model and refuse an SD1.5 ControlNet or prompt on it (and the reverse).

### Settings
- As the `full` workflow, at SDXL's {FULL_SDXL.size}x{FULL_SDXL.size}: {FULL_SDXL.summary()}.
- DCA on every decoder attention block: on SDXL output blocks 0-5, every layer. Which blocks and layers work
  best on SDXL, and the image quality on real SDXL weights, were not measured (docs/pacm.md).
{MGDM_NOTE}
- The unconditional rows take the negative prompt's pooled output and sizes, as in a KSampler (PACM optimises
  the token embeddings, not the pooled vector); the size conditioning is the latent's pixel size unless the prompt
  sets it, the same in inversion and sampling.
""", title="SDXL")
    return g


def _frontier_note() -> str:
    """The fast preset's measured figures, read from the frontier the preset was chosen on."""
    import json

    doc = json.loads((ROOT / "docs" / "stickworld" / "speed_frontier.json").read_text())
    name, ref = doc["fast_default"], doc["reference"]
    share = doc["rows"][name]["evals"] / doc["rows"][ref]["evals"]
    per_seed = "; ".join(
        f"seed {seed}: identity {rows[name]['identity'] / rows[ref]['identity'] - 1:+.1%}, background "
        f"{rows[name]['background'] / rows[ref]['background'] - 1:+.1%}"
        for seed, rows in ((seed, part["rows"]) for seed, part in doc["seeds"].items()))
    verdict = ("It meets the target (within 5 % on both, every seed)." if doc["fast_target"]["meets_target"] else
               "It misses the target (within 5 % on both, every seed); no row met it (README, \"Faster at the same "
               "quality\").")
    return (f"On the StickWorld benchmark (docs/stickworld.md) it costs {share:.1%} of the paper setting's model "
            f"evaluations; against the paper setting, per case seed (held-out characters, 4 cases each): {per_seed}. {verdict}")


def fast(g):
    p = _pipeline(g, FAST, prefix="PoseAnimate/fast", pose_file="examples/turn.json")
    _save(g, p["decoded"].out(), p["fps"], p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note(f"""
### Fast preset: the measured speed/quality point
Algorithm 1 as the paper writes it (one gradient step per step) at fewer steps, with a short inversion:
{FAST.summary()}. Guidance stays on (the optimised embeddings fill the unconditional slot).
{_frontier_note()}
StickWorld measures the method's mechanics, not SD1.5's image quality, so check the **Inversion check**
preview: if your picture is not reconstructed well, use **full**.
""", title="Fast preset: quality trade-off")
    g.note(MODELS_NOTE, title="Models")
    return g


def remix(g):
    remix_recipe = FULL.replace(steps=30, inversion_inner_steps=3, inner_steps=3, capture_steps=12, pose_frames=0,
                                transition_frames=8)
    p = _pipeline(g, remix_recipe, lora=True, prefix="PoseAnimate/remix", pose_file="examples/wave.json")
    vae, decoded = p["vae"], p["decoded"]
    edges = g.node("Canny", title="Canny of the frames", image=decoded.out(), low_threshold=0.3,
                   high_threshold=0.7)
    canny = g.node("ControlNetLoader", title="Load Canny ControlNet", control_net_name=CANNY)
    negative = p["negative"]
    pose_cn = g.node("ControlNetApplyAdvanced", title="Apply OpenPose ControlNet", positive=p["positive"].out(),
                     negative=negative.out(), control_net=p["cnet"], image=p["poses"], strength=0.8)
    both = g.node("ControlNetApplyAdvanced", title="Apply Canny ControlNet", positive=pose_cn.out("positive"),
                  negative=pose_cn.out("negative"), control_net=canny.out(), image=edges.out(), strength=0.5,
                  end_percent=0.8)
    latents = g.node("VAEEncode", title="Encode frames", pixels=decoded.out(), vae=vae)
    refine = g.node("KSampler", title="Refine (LoRA style + both ControlNets)", model=p["dca"].out(),
                    positive=both.out("positive"), negative=both.out("negative"), latent_image=latents.out(),
                    seed=0, steps=20, cfg=6.0, sampler_name="euler", scheduler="normal", denoise=0.35)
    out = g.node("VAEDecode", title="Decode refined frames", samples=refine.out(), vae=vae)
    _save(g, out.out(), p["fps"], p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note(f"""
### Remix: a LoRA and a second ControlNet
- **Load LoRA** sits between the checkpoint and everything else, so the inversion, the per-frame
  embeddings and the sampling all see the LoRA (put your own file in `models/loras`; default name
  `{LORA}`). Any SD1.5 fine-tune works as the checkpoint too.
- A refinement pass then runs ComfyUI's own **KSampler** on the frames (denoise 0.35) with the
  **DCA-patched model**, so frames stay consistent, under **two ControlNets**: OpenPose with the aligned poses
  and **Canny** (`{CANNY}`) of the PoseAnimate frames, which keeps their structure while the LoRA restyles
  details. Swap Canny for a depth ControlNet + depth preprocessor if you prefer.
- Raise denoise for a stronger restyle (identity drifts more); lower the Canny strength to allow more change.
- Extra ControlNets can also act inside PoseAnimate itself, as in a KSampler: put **Apply ControlNet** on the
  positive and negative prompts that feed the PACM nodes (their `positive` and `negative` inputs), with one image
  for every frame or one image per frame (source first); they run beside the OpenPose ControlNet in every stage,
  each CFG side with its own prompt's ControlNets.
""", title="Remix: LoRA + second ControlNet")
    g.note(MODELS_NOTE, title="Models")
    return g


def long(g):
    p = _pipeline(g, FULL.replace(pose_frames=0, transition_frames=8), window=8, frames_per_batch=8,
                  prefix="PoseAnimate/long", pose_file="examples/dance.json")
    _save(g, p["decoded"].out(), 12.0, p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note("""
### Long sequences in windows
Sample Frames and Cross-Attention Mask Extract run **8 frames per model call** (`window_size`), and
Pose Embedding Optimize optimises **8 frames per batch** (`frames_per_batch`). Each denoising step walks the
windows in frame order and hands the source's and the previous window's attention keys forward, so the
frames are the same as sampling everything at once while peak GPU memory stays flat as the sequence grows.
Time grows linearly with the number of frames.

Lower the window on small GPUs, raise it on large ones for speed (peak memory grows with the window, not
with the sequence; no memory figure per window has been measured for real SD1.5 yet). Use a long pose
file (hundreds of poses work); PATA inserts transition frames between distant poses.
""", title="Long sequence in windows")
    g.note(MODELS_NOTE, title="Models")
    return g


RETARGET_NOTE = """
### Retarget: a driving pose sequence on your character's body
No model, no picture: this workflow only makes poses, for any pose-driven video model.
1. **Pose sequence**: the driving motion, a bundled example (`examples/...`) or a POSE_KEYPOINT / OpenPose JSON
   file in ComfyUI's `input` folder (or connect *DWPose Estimator* run on a video).
2. **Source pose**: your character's pose (its body proportions), as a pose file; the sample
   `examples/character.json` is a short, long-legged figure on a 640x640 canvas.
3. Queue. **PATA Align** (`retarget`) scales and places the motion on the character, gives every bone the
   character's length, repairs bad detections and adds transition frames from the character's pose; frame 0 is
   the character's own pose.
4. Outputs in `output/PoseAnimate/retarget/`: the OpenPose video (`pose_video_*.mp4`) and the poses as JSON
   (`pose_*.json`, OpenPose/DWPose format; Load Pose Sequence reads it from the `input` folder).

Feed **PATA Align**'s `pose_images` (IMAGE) straight into a video model's pose input, e.g. ComfyUI's
**WanAnimateToVideo** `pose_video`, **WanFunControlToVideo** / **WanVaceToVideo** `control_video`, or an
OpenPose ControlNet's `image` (docs/workflows.md lists them). Set PATA Align's width/height to the video size.
"""


def retarget(g):
    seq = g.node("PoseAnimateLoadPoseSequence", title="Pose sequence", pose_file=POSE_FILE, frames=0)
    source_pose = g.node("PoseAnimateLoadPoseSequence", title="Source pose", pose_file=SOURCE_POSE_FILE)
    align = g.node("PoseAnimatePATAAlign", title="PATA Align", source_pose=source_pose.out("pose"),
                   target_pose=seq.out("pose"), transition_frames=FULL.transition_frames, mode="retarget",
                   repair=FULL.repair, width=512, height=512)
    g.node("PoseAnimateSavePoseSequence", title="Save poses (JSON)", pose=align.out("aligned_pose"),
           filename_prefix="PoseAnimate/retarget/pose")
    video = g.node("CreateVideo", title="Create pose video", images=align.out("pose_images"), fps=16.0)
    g.node("SaveVideo", title="Save pose video", video=video.out(), filename_prefix="PoseAnimate/retarget/pose_video",
           format="mp4", codec="h264")
    g.note(RETARGET_NOTE, title="How to use")
    return g


CONTROLNET_AUX = "comfyui_controlnet_aux"
DRIVING_VIDEO = "driving_video.mp4"
FRAME_STEP = 3  # every 3rd frame: 12 driving frames span 36 video frames (1.5 s at 24 fps)

DWPOSE_NOTE = f"""
### DWPose: the poses from your picture and from a video
**Needs the custom node pack comfyui_controlnet_aux** (its *DWPose Estimator*). If ComfyUI reports DWPose
Estimator as missing, install the pack with ComfyUI-Manager (*Install Missing Custom Nodes*), or clone
https://github.com/Fannovel16/comfyui_controlnet_aux into `custom_nodes` and install its requirements; then
restart ComfyUI. DWPose downloads its models from Hugging Face on its first run (`yolox_l.onnx` from
`yzd-v/DWPose`, `dw-ll_ucoco_384_bs5.torchscript.pt` from `hr16/DWPose-TorchScript-BatchSize5`).
1. **Source image**: one picture of the character (full body works best). *Source pose (DWPose)* finds its
   pose on **Resize source**: look at **Source pose check** (one skeleton on the character).
2. **Driving video**: the motion to follow, a video in ComfyUI's `input` folder (upload it on the node; the
   default name `{DRIVING_VIDEO}` is a placeholder). Its frames go through *Every Nth frame* (N = {FRAME_STEP}: the
   `batch_size` of step 1/3; 1 takes every frame) and **Driving frames** (`batch_index` = the first frame taken,
   `length` = how many: {FULL.pose_frames} as in the paper) into *Driving poses (DWPose)*; see **Driving poses
   check**. With several people in the video PATA follows the largest one of the first frame.
3. **Prompt**: describe the picture.
4. Queue. **PATA Align** ({FULL.pata_mode}) fits the driving poses to the character found in the picture and adds
   {FULL.transition_frames} transition frames from the character's own pose (`retarget` also gives every bone
   the character's length); the PACM pipeline then animates the picture as workflow **full** does. Frames land in
   `output/PoseAnimate/dwpose/`, the MP4 next to them: the source, then the transition frames, then the motion.
"""


def _dwpose_poses(g, recipe, resized):
    """The source pose from DWPose on the resized picture, the target poses from DWPose on video frames."""
    video = g.node("LoadVideo", title="Driving video", file=DRIVING_VIDEO)
    frames = g.node("GetVideoComponents", title="Video frames", video=video.out())
    # every Nth frame with core nodes: split into groups of N, keep the first of each group (the node runs once
    # per group), join the list into one batch again
    groups = g.node("RebatchImages", title="Every Nth frame (1/3): groups of N", images=frames.out("images"),
                    batch_size=FRAME_STEP)
    firsts = g.node("ImageFromBatch", title="Every Nth frame (2/3): first of each group", image=groups.out(),
                    batch_index=0, length=1)
    joined = g.node("RebatchImages", title="Every Nth frame (3/3): one batch again", images=firsts.out(),
                    batch_size=4096)
    driving = g.node("ImageFromBatch", title="Driving frames", image=joined.out(), batch_index=0,
                     length=recipe.pose_frames)
    target = g.node("DWPreprocessor", title="Driving poses (DWPose)", image=driving.out())
    g.node("PreviewImage", title="Driving poses check", images=target.out("IMAGE"))
    source = g.node("DWPreprocessor", title="Source pose (DWPose)", image=resized.out())
    g.node("PreviewImage", title="Source pose check", images=source.out("IMAGE"))
    return source.out("POSE_KEYPOINT"), target.out("POSE_KEYPOINT")


def dwpose(g):
    g.requires(CONTROLNET_AUX)
    p = _pipeline(g, FULL, prefix="PoseAnimate/dwpose", find_poses=_dwpose_poses)
    _save(g, p["decoded"].out(), p["fps"], p["prefix"])
    g.note(DWPOSE_NOTE, title="How to use (needs comfyui_controlnet_aux)")
    g.note(DWPOSE_MODELS_NOTE, title="Models")
    return g


WORKFLOWS = {"full": full, "fast": fast, "remix": remix, "long": long, "retarget": retarget, "dwpose": dwpose,
             "full_sdxl": full_sdxl}
