"""The bundled workflows, one compact function each; ``scripts/make_workflows.py`` renders them.

Every function receives an empty ``Graph`` (node specs attached) and returns it filled. Titles matter: the
headless command finds the nodes it edits by type and title ("Source image", "Prompt", "Negative prompt",
"Pose sequence", "Source pose", "Resize source"), so keep them when you edit a workflow.

The source pose comes from a pose file through Load Pose Sequence, not from Pose Extract: Pose Extract needs
the optional package controlnet-aux, whose requirements (torchvision, timm, scikit-image,
opencv-python-headless, huggingface_hub) do not sit well beside ComfyUI's torch -- in a ComfyUI Python with
torch 2.13.0, `pip install --dry-run controlnet-aux` would replace torch with 2.14.1 and add the CUDA 13
libraries. So the bundled workflows run after the README's install, and Pose Extract stays the documented
alternative (see docs/workflows.md).
"""
from __future__ import annotations

CKPT = "v1-5-pruned-emaonly.safetensors"
OPENPOSE = "control_v11p_sd15_openpose.pth"
CANNY = "control_v11p_sd15_canny.pth"
LORA = "your_style_lora.safetensors"
POSE_FILE = "examples/walk.json"
SOURCE_POSE_FILE = "examples/character.json"
PROMPT = "a young woman in a red dress and white sneakers, full body, plain studio background, best quality"
NEGATIVE = "blurry, deformed, extra limbs, bad anatomy, lowres, watermark"
SUBJECT = "woman"

MODELS_NOTE = f"""
### Models
- **Load Checkpoint**: any SD1.5 checkpoint or fine-tune (default name `{CKPT}`), in `models/checkpoints`.
- **Load OpenPose ControlNet**: an SD1.5 OpenPose ControlNet, e.g. `{OPENPOSE}`, in `models/controlnet`.

PoseAnimate is training-free: nothing is trained, and these workflows download nothing. (Pose Extract, if
you add it, downloads the OpenPose annotator weights `lllyasviel/Annotators` on its first run.)
"""

HOW_NOTE = """
### PoseAnimate — how to use
1. **Source image**: one picture of the character (full body works best).
2. **Prompt**: describe the picture; name the character with the word in **Subject** (mask extraction).
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
per-frame embeddings for every target pose → **Cross-Attention Mask Extract** finds the character →
**DCA Patch Model** (DCAM + MGDM attention) → **Sample Frames**. Frame 0 is the source.
"""


def _loaders(g, lora=False):
    ckpt = g.node("CheckpointLoaderSimple", title="Load Checkpoint", ckpt_name=CKPT)
    model, clip = ckpt.out("MODEL"), ckpt.out("CLIP")
    if lora:
        lo = g.node("LoraLoader", title="Load LoRA", model=model, clip=clip, lora_name=LORA,
                    strength_model=0.8, strength_clip=0.8)
        model, clip = lo.out("MODEL"), lo.out("CLIP")
    cnet = g.node("ControlNetLoader", title="Load OpenPose ControlNet", control_net_name=OPENPOSE)
    return model, clip, ckpt.out("VAE"), cnet.out()


def _pipeline(g, *, steps, cfg, inner_inv, inner_opt, capture_steps, window, frames_per_batch, masks=True,
              lora=False, fps=8.0, prefix="PoseAnimate", pose_file=POSE_FILE, transition_frames=8):
    """The paper's pipeline; returns a dict of the interesting node outputs."""
    model, clip, vae, cnet = _loaders(g, lora)
    image = g.node("LoadImage", title="Source image", image="example.png")
    resized = g.node("ImageScale", title="Resize source", image=image.out("IMAGE"), upscale_method="lanczos",
                     width=512, height=512, crop="center")
    prompt = g.node("PrimitiveStringMultiline", title="Prompt", value=PROMPT)
    positive = g.node("CLIPTextEncode", title="Positive prompt", text=prompt.out(), clip=clip)

    seq = g.node("PoseAnimateLoadPoseSequence", title="Pose sequence", pose_file=pose_file)
    source_pose = g.node("PoseAnimateLoadPoseSequence", title="Source pose", pose_file=SOURCE_POSE_FILE)
    align = g.node("PoseAnimatePATAAlign", title="PATA Align", source_pose=source_pose.out("pose"),
                   target_pose=seq.out("pose"), transition_frames=transition_frames, mode="similarity",
                   repair=True, width=512, height=512)  # = Resize source (the pose file has its own canvas)
    poses = align.out("pose_images")

    latent = g.node("VAEEncode", title="Encode source", pixels=resized.out(), vae=vae)
    inversion = g.node("PoseAnimatePoseAwareInversion", title="Pose-Aware Inversion", model=model,
                       control_net=cnet, latent=latent.out(), positive=positive.out(), source_pose=poses,
                       steps=steps, cfg=cfg, inner_steps=inner_inv)
    recon = g.node("VAEDecode", title="Decode reconstruction", samples=inversion.out("reconstruction"), vae=vae)
    g.node("PreviewImage", title="Inversion check (should look like the source)", images=recon.out())
    emb = g.node("PoseAnimatePoseEmbeddingOptimize", title="Pose Embedding Optimize", inversion=inversion.out(),
                 model=model, control_net=cnet, positive=positive.out(), poses=poses, inner_steps=inner_opt,
                 frames_per_batch=frames_per_batch)
    mask_out = None
    if masks:
        mx = g.node("PoseAnimateCrossAttentionMaskExtract", title="Cross-Attention Mask Extract", model=model,
                    control_net=cnet, clip=clip, embeddings=emb.out(), prompt=prompt.out(), subject=SUBJECT,
                    capture_steps=capture_steps, window_size=window)
        g.node("PreviewImage", title="Mask check", images=mx.out("preview"))
        mask_out = mx.out("masks")
    dca_inputs = {"masks": mask_out} if mask_out is not None else {}
    dca = g.node("PoseAnimateDCAPatchModel", title="DCA Patch Model", model=model, **dca_inputs)
    frames = g.node("PoseAnimateSampleFrames", title="Sample Frames", model=dca.out(), control_net=cnet,
                    positive=positive.out(), embeddings=emb.out(), window_size=window)
    decoded = g.node("VAEDecode", title="Decode frames", samples=frames.out(), vae=vae)
    return dict(model=model, clip=clip, vae=vae, cnet=cnet, positive=positive, prompt=prompt, poses=poses,
                dca=dca, decoded=decoded, fps=fps, prefix=prefix)


def _save(g, images, fps, prefix):
    g.node("SaveImage", title="Save frames", images=images, filename_prefix=f"{prefix}/frame")
    video = g.node("CreateVideo", title="Create video", images=images, fps=fps)
    g.node("SaveVideo", title="Save video", video=video.out(), filename_prefix=f"{prefix}/video", format="mp4",
           codec="h264")


# ---- the workflows ---------------------------------------------------------------------------------------------


def full(g):
    p = _pipeline(g, steps=50, cfg=7.5, inner_inv=5, inner_opt=5, capture_steps=0, window=0, frames_per_batch=0)
    _save(g, p["decoded"].out(), p["fps"], p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note(MODELS_NOTE, title="Models")
    g.note("""
### Settings
- The paper's settings per frame: 50 DDIM steps, CFG 7.5, 5 inner iterations per step for the inversion and
  for each frame. The paper animates 16 frames; this sequence makes 49 (40 walk poses + 8 transition frames
  + the source).
- DCA weights 0.7 / 0.15 / 0.15 (source / previous / own frame) on every decoder attention block.
- Masks from the subject word's cross-attention turn on MGDM. Check **Mask check**; if a mask misses the
  character, change **Subject**, set a fixed threshold, or feed a segmentation mask into `source_mask`.
- **Inversion check** should look like your source image; if not, raise the inversion's inner steps.
""", title="Settings")
    return g


def fast(g):
    p = _pipeline(g, steps=20, cfg=7.5, inner_inv=2, inner_opt=2, capture_steps=8, window=0, frames_per_batch=0,
                  prefix="PoseAnimate/fast", pose_file="examples/turn.json", transition_frames=4)
    _save(g, p["decoded"].out(), p["fps"], p["prefix"])
    g.note(HOW_NOTE, title="How to use")
    g.note("""
### Fast preset — the trade-off
20 DDIM steps instead of 50, 2 inner iterations instead of 5 (inversion and per-frame optimisation), masks
read from the first 8 steps only. Roughly 5-6x faster than **full**.

What you give up: the reconstruction of the source is less exact (fine texture, small text and faces drift),
frames flicker a little more, and hard poses can lose details of the outfit. Use it to try poses and prompts;
render the final take with the **full** workflow and the same seed-free settings.
""", title="Fast preset: quality trade-off")
    g.note(MODELS_NOTE, title="Models")
    return g


def remix(g):
    p = _pipeline(g, steps=30, cfg=7.5, inner_inv=3, inner_opt=3, capture_steps=12, window=0, frames_per_batch=0,
                  lora=True, prefix="PoseAnimate/remix", pose_file="examples/wave.json")
    vae, decoded = p["vae"], p["decoded"]
    edges = g.node("Canny", title="Canny of the frames", image=decoded.out(), low_threshold=0.3,
                   high_threshold=0.7)
    canny = g.node("ControlNetLoader", title="Load Canny ControlNet", control_net_name=CANNY)
    negative = g.node("CLIPTextEncode", title="Negative prompt", text=NEGATIVE, clip=p["clip"])
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
- Extra ControlNets can also act inside PoseAnimate itself: put **Apply ControlNet** on the positive
  conditioning that feeds the PACM nodes, with one image for every frame or one image per frame (source
  first); they run under the OpenPose ControlNet in every stage.
""", title="Remix: LoRA + second ControlNet")
    g.note(MODELS_NOTE, title="Models")
    return g


def long(g):
    p = _pipeline(g, steps=50, cfg=7.5, inner_inv=5, inner_opt=5, capture_steps=0, window=8, frames_per_batch=8,
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


WORKFLOWS = {"full": full, "fast": fast, "remix": remix, "long": long}
