"""Deterministic Temporal workflows: the task orchestrator and its subagents.

No I/O, clocks or randomness here; side effects are activities (`activities/`)
reached by the names in `switchboard.wire`. A workflow activation costs 1-2 ms
because pydantic and the domain modules are passed through the sandbox.
"""

from workflows.conversation import ConversationWorkflow
from workflows.subagent import SubagentWorkflow
from workflows.task import DelegatedTaskWorkflow

__all__ = ["ConversationWorkflow", "DelegatedTaskWorkflow", "SubagentWorkflow"]
