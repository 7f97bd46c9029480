"""Test and benchmark helpers, never shipped into a graph: the small ComfyUI-shaped test UNet with its pose
branch and ``Denoiser`` (``testing.tiny_unet``) and the deterministic peak-memory tracker
(``testing.memtrack``). Tests, benchmarks and StickWorld import it top-level; ``nodes/``, ``pipeline/`` and the
engine layers (``pata/``, ``attention/``, ``pacm/``) never do (``tests/test_package.py`` enforces it).
"""
