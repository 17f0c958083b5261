"""Model calls: one subagent turn (`turn`, inside `subagent_step`) and planning (`plan_subtasks`).

Every call goes through the official `openai` client (`switchboard.llm_client`) to
any OpenAI-compatible server (the scripted one by default). The client never
retries (`ACTIVITY_RETRIES`): Temporal's retry policy is the one place retries
happen, so they are visible in history and bounded by the workflow. Transcripts
stay in files on the worker host (claim check); only the new messages and the
reply cross history.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolUnionParam,
)
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._heartbeat import WaitNotice, heartbeating
from activities._plan import (
    PLANNER_SYSTEM_PROMPT,
    SUBMIT_PLAN_TOOL,
    parse_plan,
    submit_plan_schema,
)
from activities._transcripts import (
    TaskEndedError,
    TranscriptIdError,
    load_or_empty,
    load_transcript,
    recorded_reply,
    save_transcript,
    transcript_path,
)
from switchboard import metrics
from switchboard.contracts import (
    BAD_PLAN_ATTEMPTS,
    ChatMessage,
    ChatToolCall,
    LlmTurnInput,
    LlmTurnResult,
    Plan,
    PlanInput,
    Usage,
)
from switchboard.llm_client import ACTIVITY_RETRIES, chat_messages, openai_client, to_openai
from switchboard.settings import Settings
from switchboard.step_heartbeat import StepHeartbeat, StepStage
from switchboard.tools import openai_tool_schemas
from switchboard.wire import Activities, Errors

__all__ = ["PLANNER_SYSTEM_PROMPT", "SUBMIT_PLAN_TOOL", "LlmActivities", "submit_plan_schema"]

# Header names the scripted model reads (the same as `switchboard.model_server`'s,
# not imported from there to keep FastAPI out of workers); a real endpoint ignores them.
ROLE_HEADER = "X-Switchboard-Role"
CALL_ID_HEADER = "X-Switchboard-Call-Id"
TASK_HEADER = "X-Switchboard-Task"
SUBAGENT_HEADER = "X-Switchboard-Subagent"
PLANNER_ROLE = "planner"

RETRYABLE_STATUS = frozenset({408, 409, 429})


class LlmActivities:
    """The model-calling activities, sharing one `AsyncOpenAI` client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = openai_client(settings, max_retries=ACTIVITY_RETRIES)

    async def close(self) -> None:
        await self._client.close()

    async def turn(self, input: LlmTurnInput) -> LlmTurnResult:
        """One model turn of a subagent, appended to its transcript file.

        A retried attempt whose reply is already in the transcript (the worker died
        after the model answered) takes that reply instead of paying for the call
        again; its usage is then reported as zero (it was counted the first time).

        Raises:
            ApplicationError: `InvalidInput` for a bad transcript id or a lost
                transcript; `ModelUnavailable` / `ModelOutputInvalid` (see
                `_model_error`).
        """
        path = self._transcript(input.transcript_id)
        history = await _history(path, input)
        messages = [*history[: input.expected_length], *input.new_messages]
        recorded = recorded_reply(history, messages)
        if recorded is not None:
            return LlmTurnResult(
                content=recorded.content,
                tool_calls=recorded.tool_calls,
                finish_reason="recorded",
                transcript_length=len(messages) + 1,
            )
        # Anything after the expected prefix is from another attempt: it is replaced.
        completion = await self._complete(
            model=self._settings.llm_model,
            messages=messages,
            tools=openai_tool_schemas(input.role),
            headers={
                ROLE_HEADER: input.role.value,
                CALL_ID_HEADER: input.call_id,
                TASK_HEADER: input.task_id,
                SUBAGENT_HEADER: str(input.subagent),
            },
        )
        reply = _assistant_message(completion)
        messages.append(reply)
        await self._save(path, messages)
        usage = _usage(completion)
        _count_tokens(input.role.value, self._settings.llm_model, usage)
        return LlmTurnResult(
            content=reply.content,
            tool_calls=reply.tool_calls,
            usage=usage,
            finish_reason=completion.choices[0].finish_reason,
            transcript_length=len(messages),
        )

    @activity.defn(name=Activities.PLAN_SUBTASKS)
    async def plan_subtasks(self, input: PlanInput) -> Plan:
        """Ask the planner model for subtasks; parse them strictly.

        Raises:
            ApplicationError: `ModelOutputInvalid` when the reply holds no usable
                plan (retryable: a model may do better on a second try), else as
                `turn`.
        """
        max_subtasks = max(1, input.max_subtasks)
        user = (
            f"Goal: {input.goal}\n\nRepository: {input.repo}\n\n"
            f"Plan at most {max_subtasks} subtasks."
        )
        info = activity.info()
        messages = [
            ChatMessage(role="system", content=PLANNER_SYSTEM_PROMPT),
            ChatMessage(role="user", content=user),
        ]
        # One record per attempt series of this activity: a retry after a crash reuses it.
        path = self._transcript(f"{input.task_id}/plan-{info.workflow_run_id}-{info.activity_id}")
        recorded = recorded_reply(await asyncio.to_thread(load_or_empty, path), messages)
        if recorded is not None:
            reply, tokens = recorded, 0  # paid (and counted) by the attempt that recorded it
        else:
            model = self._settings.planner_model or self._settings.llm_model
            completion = await self._complete(
                model=model,
                messages=messages,
                tools=[submit_plan_schema(max_subtasks)],
                tool_choice={"type": "function", "function": {"name": SUBMIT_PLAN_TOOL}},
                headers={
                    ROLE_HEADER: PLANNER_ROLE,
                    # Stable across attempts of this activity, unique per workflow.
                    CALL_ID_HEADER: f"{info.workflow_id}/{info.activity_id}",
                    TASK_HEADER: input.task_id,
                },
            )
            reply = _assistant_message(completion)
            await self._save(path, [*messages, reply])
            usage = _usage(completion)
            _count_tokens(PLANNER_ROLE, model, usage)
            tokens = usage.total_tokens
        try:
            subtasks = parse_plan(reply)
        except ApplicationError as exc:
            # A bad plan is retried for a better one (the next attempt asks again), but
            # only BAD_PLAN_ATTEMPTS times; outages follow the transient policy.
            await asyncio.to_thread(path.unlink, missing_ok=True)
            if info.attempt >= BAD_PLAN_ATTEMPTS:
                raise ApplicationError(
                    f"{exc.message} (after {info.attempt} tries)", type=exc.type, non_retryable=True
                ) from exc
            raise
        return Plan(subtasks=subtasks[:max_subtasks], tokens=tokens)

    def _transcript(self, transcript_id: str) -> Path:
        try:
            return transcript_path(self._settings.transcripts_dir, transcript_id)
        except TranscriptIdError as exc:
            raise ApplicationError(str(exc), type=Errors.INVALID_INPUT, non_retryable=True) from exc

    async def _save(self, path: Path, messages: list[ChatMessage]) -> None:
        """Record a transcript; refused once its task ended on this host (a straggler).

        Raises:
            ApplicationError: `TaskEnded` (non-retryable).
        """
        root = self._settings.transcripts_dir
        try:
            await asyncio.to_thread(save_transcript, root, path, messages)
        except TaskEndedError as exc:
            raise ApplicationError(str(exc), type=Errors.TASK_ENDED, non_retryable=True) from exc

    async def _complete(
        self,
        *,
        model: str,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        headers: dict[str, str],
        tool_choice: dict[str, Any] | None = None,
    ) -> ChatCompletion:
        request = self._client.chat.completions.create(
            model=model,
            messages=chat_messages(to_openai(m) for m in messages),
            tools=cast(list[ChatCompletionToolUnionParam], tools),
            tool_choice=(
                cast(ChatCompletionToolChoiceOptionParam, tool_choice)
                if tool_choice
                else openai.omit
            ),
            extra_headers=headers,
        )
        # Say what the activity waits on: a hanging model shows as such, with its age.
        waiting = StepHeartbeat.now(StepStage.MODEL, role=headers.get(ROLE_HEADER))
        activity.heartbeat(waiting)
        try:
            completion = await heartbeating(
                request, waiting, notice=WaitNotice(self._settings.step_wait_notice_seconds)
            )
        except openai.OpenAIError as exc:
            raise _model_error(exc, model) from exc
        if not completion.choices:
            raise ApplicationError(
                f"the model {model!r} returned a response with no choices",
                type=Errors.MODEL_OUTPUT_INVALID,
            )
        return completion


async def _history(path: Path, input: LlmTurnInput) -> list[ChatMessage]:
    """The transcript a turn continues (at least `input.expected_length` messages).

    Raises:
        ApplicationError: `InvalidInput` when the file is corrupt or shorter than
            the turn expects (lost, or on another host).
    """
    try:
        # Off the event loop: the worker's workflow tasks share it (fsync can stall).
        history = await asyncio.to_thread(load_transcript, path)
    except ValidationError as exc:
        raise ApplicationError(
            f"transcript {input.transcript_id} is corrupt: {exc.error_count()} bad fields",
            type=Errors.INVALID_INPUT,
            non_retryable=True,
        ) from exc
    if len(history) < input.expected_length:
        raise ApplicationError(
            f"transcript {input.transcript_id} has {len(history)} messages but this turn "
            f"expects {input.expected_length}: the transcript file was lost or lives on "
            "another host; retrying the subagent starts it again from its branch",
            type=Errors.INVALID_INPUT,
            non_retryable=True,
        )
    return history


def _assistant_message(completion: ChatCompletion) -> ChatMessage:
    message = completion.choices[0].message
    calls = []
    for call in message.tool_calls or []:
        if call.type == "function":
            calls.append(
                ChatToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
            )
        else:  # a custom (free-form) tool call: keep its raw input for the workflow to refuse
            calls.append(
                ChatToolCall(id=call.id, name=call.custom.name, arguments=call.custom.input)
            )
    return ChatMessage(role="assistant", content=message.content, tool_calls=calls)


def _count_tokens(role: str, model: str, usage: Usage) -> None:
    meter = activity.metric_meter()
    metrics.count(
        meter, metrics.LLM_TOKENS, usage.prompt_tokens, role=role, model=model, kind="prompt"
    )
    metrics.count(
        meter,
        metrics.LLM_TOKENS,
        usage.completion_tokens,
        role=role,
        model=model,
        kind="completion",
    )


def _usage(completion: ChatCompletion) -> Usage:
    if completion.usage is None:
        return Usage()
    return Usage(
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        total_tokens=completion.usage.total_tokens,
    )


MAX_RETRY_AFTER = timedelta(minutes=5)


def _retry_after(response: Any) -> timedelta | None:
    """The server's Retry-After (seconds; an HTTP date is left to the retry policy),
    capped at `MAX_RETRY_AFTER`."""
    raw = str(response.headers.get("retry-after", "")).strip()
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative: ignore it
        return None
    return min(timedelta(seconds=seconds), MAX_RETRY_AFTER)


def _model_error(exc: openai.OpenAIError, model: str) -> ApplicationError:
    """Map a client error to a Temporal error: transient ones are retried."""
    if isinstance(exc, openai.APITimeoutError):
        return ApplicationError(
            f"the model {model!r} did not answer in time: {exc}", type=Errors.MODEL_UNAVAILABLE
        )
    if isinstance(exc, openai.APIConnectionError):
        return ApplicationError(
            f"cannot reach the model server: {exc}", type=Errors.MODEL_UNAVAILABLE
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500 or status in RETRYABLE_STATUS:
            return ApplicationError(
                f"the model server answered {status}: {exc.message}",
                type=Errors.MODEL_UNAVAILABLE,
                next_retry_delay=_retry_after(exc.response),
            )
        hint = {
            401: "check SWITCHBOARD_LLM_API_KEY",
            403: "the API key may not use this model",
            404: f"check the model name {model!r} and SWITCHBOARD_LLM_BASE_URL",
        }.get(status, "the request was refused as invalid")
        return ApplicationError(
            f"the model server refused the request ({status}: {exc.message}); {hint}",
            type=Errors.MODEL_UNAVAILABLE,
            non_retryable=True,
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return ApplicationError(
            f"the model server sent a malformed response: {exc}", type=Errors.MODEL_OUTPUT_INVALID
        )
    return ApplicationError(f"model call failed: {exc}", type=Errors.MODEL_UNAVAILABLE)
