"""Real git repositories for tests and benchmarks, built with the git command."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git", "make_repo"]


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd`; its stripped standard output (raises on a non-zero exit)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A small real repository with one commit on `main`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    contents = files or {
        "README.md": "# demo\n\nA tiny package.\n",
        "src/app.py": "def greet(name: str) -> str:\n    return f'hello {name}'\n",
        "shared.txt": "line one\nline two\n",
    }
    for name, text in contents.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path
