"""StickWorld: a synthetic 32x32 world of stick-figure characters, a tiny text- and pose-conditioned diffusion
model trained on it, and a quality benchmark of PoseAnimate on that model (see docs/stickworld.md).

``world`` draws scenes, ``model`` is the tokenizer / text encoder / TinyUNet + pose branch, ``bench`` runs the
engine and its ablations, ``metrics`` scores frames, ``pictures`` writes contact sheets and GIFs. It uses
``pata``, ``pacm`` and ``attention`` as top-level packages (like scripts/ and benchmarks/) and is never
imported by ``nodes/``.
"""
