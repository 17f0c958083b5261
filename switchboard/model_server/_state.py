"""Mutable server state: scenario, knobs, pending faults and request statistics.

Everything runs on the server's one event loop and no method awaits, so no lock
is needed: each read-modify-write completes before another request runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from enum import StrEnum
from typing import Any

from pydantic import Field

from switchboard.model_server._scenario import Scenario, ScriptedRole
from switchboard.models import Model


class FaultKind(StrEnum):
    HTTP_429 = "http_429"
    HTTP_500 = "http_500"
    HTTP_401 = "http_401"
    HANG = "hang"
    MALFORMED_TOOL_JSON = "malformed_tool_json"


class Fault(Model):
    """The next `count` requests of `role` (any role when unset) get this fault."""

    kind: FaultKind
    role: ScriptedRole | None = None
    count: int = Field(default=1, ge=1, le=1_000_000)


class ServerConfig(Model):
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    """Delay before the first byte of every completion."""
    token_rate: float = Field(default=0, ge=0)
    """Completion tokens per second (streamed, or as total delay); 0 = instant."""
    role_latency_ms: dict[ScriptedRole, int] = Field(default_factory=dict)
    """Per-role `latency_ms` overrides: slow subagents beside an instant chat."""

    def latency_for(self, role: ScriptedRole) -> int:
        return self.role_latency_ms.get(role, self.latency_ms)


class ConfigUpdate(Model):
    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    token_rate: float | None = Field(default=None, ge=0)
    role_latency_ms: dict[ScriptedRole, int] | None = None


class ServerState:
    """One scripted model's state; `create_app` makes one per app."""

    def __init__(self, scenario: Scenario, config: ServerConfig) -> None:
        self.scenario = scenario
        self.config = config
        self.faults: list[Fault] = []
        self.stopping = asyncio.Event()
        """Set when the server shuts down, so hanging requests let go."""
        self._total = 0
        self._by_role: Counter[str] = Counter()
        self._by_call_id: Counter[str] = Counter()
        self._answered: Counter[str] = Counter()
        self._requested_at: defaultdict[str, list[float]] = defaultdict(list)
        self._answered_at: defaultdict[str, list[float]] = defaultdict(list)
        self._faults_injected = 0
        self._open = 0

    def record_request(self, role: ScriptedRole, call_id: str | None) -> None:
        self._total += 1
        self._open += 1
        self._by_role[role.value] += 1
        if call_id:
            self._by_call_id[call_id] += 1
            self._requested_at[call_id].append(time.time())

    def record_answer(self, call_id: str | None) -> None:
        """The reply is produced: the call is paid for, whoever still listens."""
        if call_id:
            self._answered[call_id] += 1
            self._answered_at[call_id].append(time.time())

    def record_closed(self) -> None:
        """A request's handler is done (replied, refused, or its caller went away)."""
        self._open -= 1

    def take_fault(self, role: ScriptedRole, *, has_tool_calls: bool) -> FaultKind | None:
        """Consume one matching fault, if any.

        A malformed-JSON fault waits for a reply that has tool calls to break.
        """
        for fault in self.faults:
            if fault.role is not None and fault.role is not role:
                continue
            if fault.kind is FaultKind.MALFORMED_TOOL_JSON and not has_tool_calls:
                continue
            fault.count -= 1
            if fault.count == 0:
                self.faults.remove(fault)
            self._faults_injected += 1
            return fault.kind
        return None

    def add_faults(self, faults: list[Fault]) -> None:
        self.faults.extend(fault.model_copy() for fault in faults)

    def reset(self) -> None:
        self.faults.clear()
        self._total = 0
        self._by_role.clear()
        self._by_call_id.clear()
        self._answered.clear()
        self._requested_at.clear()
        self._answered_at.clear()
        self._faults_injected = 0

    def stats(self) -> dict[str, Any]:
        return {
            "total": self._total,
            "by_role": dict(self._by_role),
            "by_call_id": dict(self._by_call_id),
            "duplicates": sorted(k for k, n in self._by_call_id.items() if n > 1),
            "answered_duplicates": sorted(k for k, n in self._answered.items() if n > 1),
            # When (wall clock) each call paid twice was requested and answered: a
            # benchmark that kills the caller places its kills between them.
            "answered_twice_at": {
                k: {"requested": self._requested_at[k], "answered": v}
                for k, v in self._answered_at.items()
                if len(v) > 1
            },
            "in_flight": self._open,
            "faults_injected": self._faults_injected,
            "pending_faults": [fault.model_dump(mode="json") for fault in self.faults],
        }
