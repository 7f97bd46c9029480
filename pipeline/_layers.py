"""The engine layers as the pipeline sees them: ``poseanimate.pata`` etc. when the pack is imported as a package
(ComfyUI, the nodes), top-level ``pata`` etc. when the repository root is on ``sys.path`` (scripts, benchmarks,
StickWorld). The one place that decides; the rest of the pipeline imports the layers from here."""
from __future__ import annotations

if __package__ and "." in __package__:
    from .. import attention, pacm, pata  # noqa: F401
else:
    import attention  # noqa: F401
    import pacm  # noqa: F401
    import pata  # noqa: F401
