"""Helpers shared by every node file: the category names and the user-facing error convention.

A user mistake must surface in ComfyUI as one clear sentence that names the node, the input and the fix:
``"<Node>: input '<input>': <problem>. Fix: <fix>"``. The pure layers and the pipeline raise ``ValueError``
whose message starts with the argument name (``pipeline.errors``: one convention for every layer), and
argument names match node input names; nodes wrap their calls in :func:`node_errors` so the message gains the
node's display name.
"""
from __future__ import annotations

import contextlib

from ..pipeline.errors import input_message, node_message

CATEGORY = "PoseAnimate"


class PoseAnimateError(ValueError):
    """A user-facing error raised by a PoseAnimate node."""


def input_error(node: str, input_name: str, problem: str, fix: str) -> PoseAnimateError:
    """Build the standard message: ``<node>: input '<input>': <problem>. Fix: <fix>``."""
    return PoseAnimateError(input_message(node, input_name, problem, fix))


@contextlib.contextmanager
def node_errors(node: str, inputs: dict[str, str] | None = None):
    """Re-raise ``ValueError`` from the pure layers and the pipeline with the node's display name in front.

    ``inputs`` maps a pure-layer argument name to the node input it comes from: a message that begins with
    ``"<argument>: "`` then begins with ``"input '<node input>': "``.
    """
    try:
        yield
    except PoseAnimateError:
        raise
    except ValueError as exc:
        raise PoseAnimateError(node_message(node, str(exc), inputs)) from None


def node_inputs(node_class) -> dict[str, str]:
    """Every input name of a node class mapped to itself, for :func:`node_errors`: an argument of the pipeline or
    the engine that bears a node input's name (``window_size``, ``inner_steps``, ...) is that input."""
    spec = node_class.INPUT_TYPES()
    return {name: name for group in ("required", "optional") for name in spec.get(group, {})}
