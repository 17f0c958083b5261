"""Default excludes for what subagents commit: build litter no repository wants.

`git add --all` in a repository without a `.gitignore` would commit
`__pycache__/`, `.pytest_cache/` and the like that a worker's test run left. These
patterns are git's `core.excludesFile` for subagent commits and checkpoints, so
they apply under the repository's own ignore rules: a repository's `.gitignore`
can still re-include one with `!pattern`. The list is kept to things that are
never source code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DEFAULT_EXCLUDES: tuple[str, ...] = (
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".hypothesis/",
    ".tox/",
    ".nox/",
    ".coverage",
    ".coverage.*",
    "htmlcov/",
    "*.egg-info/",
    ".eggs/",
    ".venv/",
    "node_modules/",
    ".npm/",
    ".DS_Store",
)

FILE_NAME = "default-excludes"


def default_excludes_file(directory: Path) -> Path:
    """`directory/default-excludes` holding `DEFAULT_EXCLUDES`, (re)written when it differs.

    The directory is the host's (never a worktree's), so no subagent can edit the list.
    """
    path = directory / FILE_NAME
    text = "".join(f"{pattern}\n" for pattern in DEFAULT_EXCLUDES)
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{FILE_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
