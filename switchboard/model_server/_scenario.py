"""Scenario files: which assistant turns the scripted model plays, per role.

A scenario is data (YAML or JSON), validated with pydantic so a typo in a file
fails loudly at load time with the path of the bad field, not mid-run.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from switchboard.models import Model


class ScenarioError(ValueError):
    """A scenario file or document that cannot be used, with the reason."""


class ScriptedRole(StrEnum):
    """Values of the `X-Switchboard-Role` header."""

    PLANNER = "planner"
    EXPLORER = "explorer"
    WORKER = "worker"
    REVIEWER = "reviewer"
    CONVERSATION = "conversation"


class ToolCallSpec(Model):
    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """An object (sent as JSON) or a raw string sent verbatim, valid JSON or not."""


class Turn(Model):
    """One assistant message: text, tool calls, or both."""

    content: str | None = None
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Turn:
        if self.content is None and not self.tool_calls:
            raise ValueError("a turn needs `content`, `tool_calls` or both")
        return self


class Script(Model):
    """A sequence of turns, used when `when` matches the chosen user message."""

    when: str | None = None
    """Regular expression searched in the user message named by `match`; None matches all."""
    match: Literal["first_user", "last_user"] = "first_user"
    index_from: Literal["start", "last_user"] = "start"
    """`start`: turn index = assistant messages in the request; `last_user`: only
    those after the last user message (for chats, where every user message starts
    a new exchange)."""
    turns: list[Turn] = Field(default_factory=list)
    default: Turn | None = None
    """Played past the end of `turns`; the role's default when unset."""

    @field_validator("when")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"`when` is not a valid regular expression: {exc}") from exc
        return value


class RoleScript(Model):
    """What one role plays: the first matching script, else `turns`, then `default`."""

    scripts: list[Script] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    default: Turn | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, value: Any) -> Any:
        # `worker: [turn, turn]` is the common case; spare the `turns:` key.
        if isinstance(value, list):
            return {"turns": value}
        return value


class Scenario(Model):
    name: str = "scenario"
    description: str = ""
    roles: dict[ScriptedRole, RoleScript] = Field(default_factory=dict)


def parse_scenario(document: object, *, source: str = "the document") -> Scenario:
    """Validate an already-decoded scenario document.

    Raises:
        ScenarioError: naming each bad field and what is wrong with it.
    """
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ScenarioError(f"{source} is not a valid scenario: {problems}") from exc


def load_scenario(path: Path) -> Scenario:
    """Read a scenario from a `.json`, `.yaml` or `.yml` file.

    Raises:
        ScenarioError: the file is missing, unparsable or not a valid scenario.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"scenario file {path} is not valid {_format(path)}: {exc}") from exc
    return parse_scenario(document, source=f"scenario file {path}")


def builtin_scenario(name: str = "demo") -> Scenario:
    """A scenario shipped with the package (`switchboard/scenarios/<name>.yaml`).

    Raises:
        ScenarioError: no built-in scenario has that name.
    """
    folder = resources.files("switchboard").joinpath("scenarios")
    known = sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name not in known:
        raise ScenarioError(f"no built-in scenario {name!r}; built-in: {', '.join(known)}")
    text = folder.joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return parse_scenario(yaml.safe_load(text), source=f"built-in scenario {name!r}")


def _format(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"
