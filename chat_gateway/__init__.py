"""The conversation layer: a chat that never waits on a task.

`Gateway` runs chat sessions (each a durable `ConversationWorkflow`): a turn
streams the conversation model's tokens to every client of the session at
once, runs the model's tool calls (delegate, inspect, steer, decide, cancel
tasks) through `TaskService`, and records each step in the workflow. Task
watchers push each task's progress to the session's clients and record the
notable events into the conversation, so the next turn sees them. Surfaces
(the SSE/WebSocket session API, the OpenAI-compatible endpoint, the web page,
`switchboard chat`) are thin layers in `api/` and `entrypoints/_cli_chat.py`.

Costs: a turn adds two to three Temporal round trips per model call (~8 ms
each on one machine) and none before the first token beyond recording the
user's message; a watched task costs one parked history long poll plus one
events query and one status query per workflow task that changed it.
See docs/conversation.md.
"""

from chat_gateway._gateway import Gateway, SessionInfo
from chat_gateway._hub import Draft, StreamItem, TaskUpdate, TokenDelta, TurnMarker
from chat_gateway._model_errors import ModelCallFailed, ModelError
from chat_gateway._store import SessionNotFound, SessionStore, SessionSummary, TooManySessions
from chat_gateway._tool_args import TOOL_SCHEMAS, ToolName

__all__ = [
    "TOOL_SCHEMAS",
    "Draft",
    "Gateway",
    "ModelCallFailed",
    "ModelError",
    "SessionInfo",
    "SessionNotFound",
    "SessionStore",
    "SessionSummary",
    "StreamItem",
    "TaskUpdate",
    "TokenDelta",
    "TooManySessions",
    "ToolName",
    "TurnMarker",
]
