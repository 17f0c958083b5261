"""What the scripted model plays in the benchmarks, and the repositories it works on.

Every worker runs `steps` model turns, each with exactly one real tool call
(listing, reading, searching, writing, running commands), then a turn that calls
`finish`. Files are named by `{subagent}`, so parallel workers never conflict and
the final diff of a task is the same on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from switchboard.model_server import Scenario, parse_scenario
from testkit import git

_HELPER = '''"""Written by benchmark subagent {subagent}."""


def add_{subagent}(a: int, b: int) -> int:
    return a + b
'''
_TEST = """from src.bench_{subagent} import add_{subagent}


def test_add() -> None:
    assert add_{subagent}(2, 3) == 5
"""

_CYCLE: list[tuple[str, dict[str, Any]]] = [
    ("list_files", {"path": "."}),
    ("read_file", {"path": "README.md"}),
    ("search", {"pattern": "def ", "path": "."}),
    ("write_file", {"path": "src/bench_{subagent}.py", "content": _HELPER}),
    ("read_file", {"path": "src/bench_{subagent}.py"}),
    (
        "run",
        {
            "command": "python3 -c \"import ast; ast.parse(open('src/bench_{subagent}.py')"
            ".read()); print('ok')\"",
            "timeout_seconds": 30,
        },
    ),
    ("write_file", {"path": "tests/test_bench_{subagent}.py", "content": _TEST}),
    ("list_files", {"path": "src"}),
    ("run", {"command": "git status --short", "timeout_seconds": 30}),
    ("search", {"pattern": "add_", "path": "src"}),
]
"""Ten steps a coding agent takes; longer runs repeat the read-only ones after these."""
_READS = [c for c in _CYCLE if c[0] in ("list_files", "read_file", "search")]


def worker_turns(steps: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for i in range(steps):
        name, args = _CYCLE[i] if i < len(_CYCLE) else _READS[i % len(_READS)]
        turns.append({"tool_calls": [{"name": name, "arguments": args}]})
    summary = {"summary": "benchmark subagent {subagent} finished"}
    turns.append({"tool_calls": [{"name": "finish", "arguments": summary}]})
    return turns


def steps_scenario(steps: int) -> Scenario:
    """Workers take `steps` tool steps then finish; explorers and reviewers finish at once."""
    done = {"tool_calls": [{"name": "finish", "arguments": {"summary": "nothing to add"}}]}
    approve = {
        "tool_calls": [{"name": "finish", "arguments": {"summary": "fine", "verdict": "approve"}}]
    }
    return parse_scenario(
        {
            "name": f"bench-{steps}-steps",
            "roles": {
                "worker": {"turns": worker_turns(steps)},
                "explorer": {"turns": [done]},
                "reviewer": {"turns": [approve]},
            },
        },
        source="the benchmark scenario",
    )


def make_small_repo(path: Path, files: int = 40) -> Path:
    """A small Python project with one commit on `main`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    (path / "README.md").write_text("# bench\n\nA small project the benchmark agents work on.\n")
    (path / "src").mkdir()
    (path / "tests").mkdir()
    (path / "src" / "__init__.py").write_text("")
    for i in range(files):
        (path / "src" / f"module_{i}.py").write_text(
            f'"""Module {i}."""\n\n\ndef f_{i}(x: int) -> int:\n    return x * {i}\n'
        )
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path
