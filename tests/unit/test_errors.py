"""The one translation from temporalio's errors into the family, and the one OpenAI
client factory and message conversion (`switchboard.errors`, `switchboard.llm_client`)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from switchboard import wire
from switchboard.contracts import ChatMessage, ChatToolCall
from switchboard.errors import (
    InvalidRequest,
    NotFound,
    Refused,
    ServiceError,
    ServiceUnavailable,
    SessionNotFound,
    TemporalErrors,
    WrongPhase,
)
from switchboard.llm_client import (
    ACTIVITY_RETRIES,
    GATEWAY_RETRIES,
    openai_client,
    openai_message,
    to_openai,
)
from switchboard.settings import Settings

ADDRESS = "127.0.0.1:1"
SESSIONS = TemporalErrors(ADDRESS, "session", lambda i: SessionNotFound(f"no session {i!r}"))


def rpc(status: RPCStatusCode, message: str = "boom") -> RPCError:
    return RPCError(message, status, b"")


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (rpc(RPCStatusCode.NOT_FOUND), SessionNotFound, "no session 'session-1'"),
        (rpc(RPCStatusCode.INVALID_ARGUMENT, "bad id"), InvalidRequest, "bad id"),
        (rpc(RPCStatusCode.DEADLINE_EXCEEDED), ServiceUnavailable, "no worker answered"),
        (rpc(RPCStatusCode.UNAVAILABLE), ServiceUnavailable, f"not reachable at {ADDRESS}"),
        (rpc(RPCStatusCode.PERMISSION_DENIED, "no"), ServiceError, "Temporal refused the call"),
        (WorkflowUpdateRPCTimeoutOrCancelledError(), ServiceUnavailable, "within 30 s"),
        (WorkflowQueryFailedError("no handler"), InvalidRequest, "no handler"),
        (RuntimeError("Failed client connect: refused"), ServiceUnavailable, "not reachable"),
    ],
)
def test_each_temporal_error_becomes_one_family_member(
    error: BaseException, kind: type[ServiceError], words: str
) -> None:
    translated = SESSIONS.translate(error, "session-1")
    assert type(translated) is kind
    assert words in str(translated)


def test_update_refusals_keep_the_validators_reason() -> None:
    def refused(error_type: str) -> ServiceError | None:
        cause = ApplicationError("not now", type=error_type)
        return SESSIONS.translate(WorkflowUpdateFailedError(cause), "session-1")

    assert isinstance(refused(wire.Errors.WRONG_PHASE), WrongPhase)
    assert isinstance(refused(wire.Errors.INVALID_INPUT), InvalidRequest)
    other = refused("Unauthorised")
    assert (
        isinstance(other, Refused)
        and "the session refused the update" in str(other)
        and "not now" in str(other)
    )


def test_without_an_id_a_not_found_is_not_blamed_on_a_workflow() -> None:
    # A NOT_FOUND with no workflow named is the namespace (or the server), not a task.
    translated = SESSIONS.translate(rpc(RPCStatusCode.NOT_FOUND, "namespace x"), None)
    assert type(translated) is ServiceError and not isinstance(translated, NotFound)


async def test_around_raises_the_member_and_lets_other_errors_through() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        async with SESSIONS.around("session-1"):
            raise rpc(RPCStatusCode.UNAVAILABLE)
    assert isinstance(caught.value.__cause__, RPCError)
    with pytest.raises(KeyError):
        async with SESSIONS.around("session-1"):
            raise KeyError("a bug stays a bug")


async def test_one_client_factory_for_activities_and_the_gateway() -> None:
    settings = Settings(llm_base_url="http://127.0.0.1:9/v1", _env_file=None)
    activity = openai_client(settings, max_retries=ACTIVITY_RETRIES)
    gateway = openai_client(settings, max_retries=GATEWAY_RETRIES)
    try:
        assert (activity.max_retries, gateway.max_retries) == (0, 2)
        assert str(activity.base_url).rstrip("/") == "http://127.0.0.1:9/v1"
        assert activity.api_key == "scripted"
        assert activity.timeout == settings.llm_timeout_seconds
    finally:
        await activity.close()
        await gateway.close()
    keyed = settings.model_copy(update={"llm_api_key": SecretStr("sk-test")})
    client = openai_client(keyed, max_retries=0)
    assert client.api_key == "sk-test"
    await client.close()


def test_one_message_conversion() -> None:
    call = ChatToolCall(id="c1", name="read_file", arguments='{"path": "a"}')
    assert to_openai(ChatMessage(role="assistant", content=None, tool_calls=[call])) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "a"}'},
            }
        ],
    }
    assert to_openai(ChatMessage(role="tool", content="x", tool_call_id="c1")) == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "x",
    }
    assert openai_message("user", None) == {"role": "user", "content": ""}
