"""Deterministic Temporal workflows: the task orchestrator and its subagents.

No I/O, clocks or randomness here; side effects are activities (`activities/`)
reached by the names in `switchboard.wire`. A workflow activation costs 1-2 ms
because pydantic and the domain modules are passed through the sandbox.

The classes are imported on first use: the workflow sandbox imports a workflow's
module afresh for every new run, and importing the package would otherwise bring
all three workflow modules into each one (a subagent's first workflow task paid
~20 ms of CPU for the two it does not use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workflows.conversation import ConversationWorkflow
    from workflows.maintenance import MirrorMaintenanceWorkflow
    from workflows.subagent import SubagentWorkflow
    from workflows.task import DelegatedTaskWorkflow

__all__ = [
    "ConversationWorkflow",
    "DelegatedTaskWorkflow",
    "MirrorMaintenanceWorkflow",
    "SubagentWorkflow",
]

_MODULES = {
    "ConversationWorkflow": "workflows.conversation",
    "DelegatedTaskWorkflow": "workflows.task",
    "MirrorMaintenanceWorkflow": "workflows.maintenance",
    "SubagentWorkflow": "workflows.subagent",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'workflows' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
