"""The bundled workflows, one compact function each; ``scripts/make_workflows.py`` renders them."""
from __future__ import annotations

WORKFLOWS = {}
