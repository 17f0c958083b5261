"""The size rule of the product packages, checked by `make lint` (`python -m testkit.sizes`).

No module over `MAX_MODULE_LINES` lines, and no function (or method) over
`MAX_FUNCTION_LINES` lines unless its docstring has a line starting with
`Long because:` that gives the reason. A function's length runs from its `def`
line to its last line (decorators excluded, its docstring and any nested
functions included). The check reads the source with `ast` only: nothing is
imported, so it runs on code that does not import cleanly too.

A module being split on another branch may be listed in `PENDING_SPLITS` with
who splits it: it is printed as pending, not failed. An entry whose module fits
(or is gone) is itself a finding, so the list cannot outlive the split.

Exit status 0 when everything fits, 1 with one line per finding otherwise.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LONG_BECAUSE",
    "MAX_FUNCTION_LINES",
    "MAX_MODULE_LINES",
    "PENDING_SPLITS",
    "PRODUCT_PACKAGES",
    "Finding",
    "apply_pending",
    "check_paths",
    "check_source",
    "main",
]

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_BECAUSE = "Long because:"
PRODUCT_PACKAGES = ("switchboard", "workflows", "activities", "api", "chat_gateway", "entrypoints")
PENDING_SPLITS: dict[str, str] = {}
"""Oversized modules (path from the repository root) with a split under way elsewhere."""

_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    message: str
    module_size: bool = False
    """The finding is the module's length (which `PENDING_SPLITS` may hold)."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def check_source(path: str, source: str) -> list[Finding]:
    """The findings of one module's source (`path` only names it in the findings)."""
    findings: list[Finding] = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        findings.append(
            Finding(
                path,
                1,
                f"module has {lines} lines (most allowed {MAX_MODULE_LINES})",
                module_size=True,
            )
        )
    for function, name in _functions(ast.parse(source, filename=path)):
        length = (function.end_lineno or function.lineno) - function.lineno + 1
        if length > MAX_FUNCTION_LINES and not _justified(function):
            findings.append(
                Finding(
                    path,
                    function.lineno,
                    f"{name} has {length} lines (most allowed {MAX_FUNCTION_LINES}); "
                    f"split it, or give the reason in its docstring on a line "
                    f"starting {LONG_BECAUSE!r}",
                )
            )
    return findings


def check_paths(paths: Iterable[Path], root: Path) -> list[Finding]:
    """The findings of every `.py` file under `paths` (files or directories)."""
    findings: list[Finding] = []
    for file in sorted(_python_files(paths)):
        shown = file.relative_to(root) if file.is_relative_to(root) else file
        findings.extend(check_source(str(shown), file.read_text(encoding="utf-8")))
    return findings


def apply_pending(
    findings: list[Finding], pending: dict[str, str], root: Path
) -> tuple[list[Finding], list[Finding]]:
    """Split `findings` into (pending module sizes, the rest plus stale `pending` entries)."""
    held = [f for f in findings if f.module_size and f.path in pending]
    oversized = {f.path for f in held}
    rest = [f for f in findings if f not in held]
    for path in sorted(set(pending) - oversized):
        state = "fits now" if (root / path).exists() else "is gone"
        rest.append(Finding(path, 1, f"{state}: remove it from PENDING_SPLITS"))
    return held, rest


def _python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from (p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            yield path


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[_Function, str]]:
    """Every function in `tree` with its qualified name (`Class.method`, `outer.inner`)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, _Function):
            name = f"{prefix}{node.name}"
            yield node, name
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _justified(function: _Function) -> bool:
    docstring = ast.get_docstring(function) or ""
    return any(
        line.strip().startswith(LONG_BECAUSE) and line.strip() != LONG_BECAUSE
        for line in docstring.splitlines()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Check the given paths (the product packages by default) from the current directory."""
    root = Path.cwd()
    args = list(sys.argv[1:] if argv is None else argv)
    paths = [root / a for a in args] if args else [root / p for p in PRODUCT_PACKAGES]
    missing = [p for p in paths if not p.exists()]
    if missing:
        sys.stderr.write(f"no such path: {', '.join(map(str, missing))}\n")
        return 2
    findings = check_paths(paths, root)
    pending, findings = apply_pending(findings, PENDING_SPLITS, root)
    for finding in pending:
        sys.stdout.write(f"pending: {finding} ({PENDING_SPLITS[finding.path]})\n")
    for finding in findings:
        sys.stdout.write(f"{finding}\n")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
