"""Bridge pacm's ``callback(stage, done, total)`` onto ComfyUI's progress bar and interrupt button."""
from __future__ import annotations


class ComfyProgress:
    """A pacm callback: checks ComfyUI's interrupt flag and moves ``comfy.utils.ProgressBar``.

    One bar per stage: when ``stage`` changes, the bar restarts at 0 of the new total. ``stages`` records
    the (stage, done, total) calls, handy for tests and logs. Raises ComfyUI's
    ``InterruptProcessingException`` when the user pressed Cancel, which stops the pacm stage.
    """

    def __init__(self, node_id=None):
        self.node_id = node_id
        self._bar = None
        self._stage = None
        self.calls = 0
        self.last = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        import comfy.model_management as mm
        import comfy.utils

        mm.throw_exception_if_processing_interrupted()
        self.calls += 1
        self.last = (stage, int(done), int(total))
        if self._bar is None or stage != self._stage:
            self._bar = comfy.utils.ProgressBar(max(int(total), 1), node_id=self.node_id)
            self._stage = stage
        self._bar.update_absolute(int(done), max(int(total), 1))
