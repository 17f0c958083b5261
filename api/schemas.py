"""Request and response bodies of the tasks API (the domain models cover the rest).

Who decides or steers is never taken from the body: it is the authenticated
caller, so these bodies carry only what the caller says.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from switchboard.models import (
    MAX_GOAL_CHARS,
    Model,
    TaskRequest,
    TaskSpec,
    TaskSummary,
)

__all__ = [
    "ApproveBody",
    "RejectBody",
    "RequestChangesBody",
    "SteerBody",
    "TaskActionAccepted",
    "TaskCreate",
    "TasksPublic",
]


class TaskCreate(TaskSpec):
    """A `TaskRequest` without `owner`: the owner is the caller."""

    def to_request(self, owner: str) -> TaskRequest:
        return TaskRequest.model_validate({**self.model_dump(), "owner": owner})


class TasksPublic(Model):
    data: list[TaskSummary]
    count: int


class ApproveBody(Model):
    comment: str = Field(default="", max_length=10_000)
    drop_failed: bool = False


class RejectBody(Model):
    comment: str = Field(default="", max_length=10_000)


class RequestChangesBody(Model):
    feedback: str = Field(default="", max_length=MAX_GOAL_CHARS)
    only_failed: bool = False
    rebase: bool = False
    """Rebase the change onto the target branch's new tip (no worker runs)."""

    @model_validator(mode="after")
    def _feedback_not_blank(self) -> RequestChangesBody:
        if not self.feedback.strip() and not (self.only_failed or self.rebase):
            raise ValueError("feedback must not be blank: say what should change")
        return self


class SteerBody(Model):
    guidance: str = Field(min_length=1, max_length=MAX_GOAL_CHARS)

    @field_validator("guidance")
    @classmethod
    def _guidance_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("guidance must not be blank")
        return value


class TaskActionAccepted(Model):
    """A cancel or steer was delivered; the task acts on it asynchronously."""

    task_id: str
    action: str
