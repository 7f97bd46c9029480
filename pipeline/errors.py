"""One error-message convention for every layer: the argument (or node input) first, then the problem, then
the fix: ``"<argument>: <problem>. Fix: <fix>"``.

The pure layers (``pata``, ``attention``, ``pacm``) raise ``ValueError`` with messages in this shape (they do
not import this module; ``tests/test_package.py`` checks the shape of their messages); nodes turn such a message
into ``"<Node>: input '<input>': <problem>. Fix: <fix>"`` through :func:`node_message`.
"""
from __future__ import annotations

import re

_ARGUMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_./]*): ")


def argument_error(argument: str, problem: str, fix: str) -> ValueError:
    """``ValueError("<argument>: <problem>. Fix: <fix>")``."""
    return ValueError(f"{argument}: {problem.rstrip('.')}. Fix: {fix}")


def split_argument(message: str) -> tuple[str | None, str]:
    """``"steps: must be >= 1"`` -> ``("steps", "must be >= 1")``; a message without the prefix -> ``(None, message)``."""
    m = _ARGUMENT.match(message)
    if m is None:
        return None, message
    return m.group(1), message[m.end():]


def input_message(node: str, input_name: str, problem: str, fix: str) -> str:
    """``"<node>: input '<input>': <problem>. Fix: <fix>"``."""
    return f"{node}: input '{input_name}': {problem.rstrip('.')}. Fix: {fix}"


def node_message(node: str, message: str, inputs: dict[str, str] | None = None) -> str:
    """A pure layer's message as the node's: the argument becomes ``input '<node input>'`` when ``inputs`` maps
    it to one; the node's name goes in front."""
    argument, rest = split_argument(message)
    if argument is not None and inputs and argument in inputs:
        return f"{node}: input '{inputs[argument]}': {rest}"
    return f"{node}: {message}"
