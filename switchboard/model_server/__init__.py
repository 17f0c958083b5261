"""The scripted model: an OpenAI-compatible HTTP server that plays scenario files.

A test double of the model only. Agents, the `openai` client, HTTP and SSE
streaming all run for real against it, so the whole system can be exercised
without a paid model. The reply to a request depends only on the request (its
role header and how many assistant messages it holds), so a retried call gets
the same answer. Knobs (latency, token rate) and injected faults (429, 500,
401, hang, malformed tool JSON) serve reliability tests and benchmarks.

Costs: importing this pulls in FastAPI and uvicorn; nothing runs until
`create_app`, `serve` or `running_model_server` is called.
See docs/model-server.md.
"""

from switchboard.model_server._app import (
    CALL_ID_HEADER,
    ROLE_HEADER,
    SUBAGENT_HEADER,
    TASK_HEADER,
    control_token,
    create_app,
)
from switchboard.model_server._scenario import (
    RoleScript,
    Scenario,
    ScenarioError,
    Script,
    ScriptedRole,
    ToolCallSpec,
    Turn,
    builtin_scenario,
    load_scenario,
    parse_scenario,
)
from switchboard.model_server._server import (
    CONTROL_TOKEN_ENV,
    ModelServerHandle,
    new_control_token,
    running_model_server,
    serve,
)
from switchboard.model_server._state import Fault, FaultKind, ServerConfig

__all__ = [
    "CALL_ID_HEADER",
    "CONTROL_TOKEN_ENV",
    "ROLE_HEADER",
    "SUBAGENT_HEADER",
    "TASK_HEADER",
    "Fault",
    "FaultKind",
    "ModelServerHandle",
    "RoleScript",
    "Scenario",
    "ScenarioError",
    "Script",
    "ScriptedRole",
    "ServerConfig",
    "ToolCallSpec",
    "Turn",
    "builtin_scenario",
    "control_token",
    "create_app",
    "load_scenario",
    "new_control_token",
    "parse_scenario",
    "running_model_server",
    "serve",
]
