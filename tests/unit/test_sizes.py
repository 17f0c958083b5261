"""The size check of `make lint`: long modules and functions are found, a reason is honoured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from testkit.sizes import (
    MAX_FUNCTION_LINES,
    MAX_MODULE_LINES,
    PENDING_SPLITS,
    Finding,
    apply_pending,
    check_paths,
    check_source,
)

ROOT = Path(__file__).resolve().parents[2]


def _function(name: str, body_lines: int, docstring: str = "", indent: str = "") -> str:
    doc = f'{indent}    """{docstring}"""\n' if docstring else ""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}() -> None:\n{doc}{body}"


def test_a_function_over_the_limit_is_named_with_its_length() -> None:
    fits = _function("fits", MAX_FUNCTION_LINES - 1)  # with its def line: the limit exactly
    too_long = _function("too_long", MAX_FUNCTION_LINES)
    findings = check_source("m.py", fits + "\n\n" + too_long)
    assert [(f.line, f.module_size) for f in findings] == [(fits.count("\n") + 3, False)]
    assert f"too_long has {MAX_FUNCTION_LINES + 1} lines" in findings[0].message


def test_methods_and_nested_functions_are_checked_by_qualified_name() -> None:
    method = _function("run", MAX_FUNCTION_LINES, indent="    ")
    source = "class Worker:\n" + method
    assert ["Worker.run has" in f.message for f in check_source("m.py", source)] == [True]
    inner = _function("inner", MAX_FUNCTION_LINES, indent="    ")
    nested = "def outer() -> None:\n" + inner
    names = [f.message.split(" has ")[0] for f in check_source("m.py", nested)]
    assert names == ["outer", "outer.inner"]


def test_a_reason_in_the_docstring_allows_a_long_function_and_an_empty_one_does_not() -> None:
    justified = _function(
        "long", MAX_FUNCTION_LINES, "Set up.\n\n    Long because: one try/finally owns it all.\n"
    )
    assert check_source("m.py", justified) == []
    bare = _function("long", MAX_FUNCTION_LINES, "Set up.\n\n    Long because:\n")
    assert len(check_source("m.py", bare)) == 1
    elsewhere = _function("long", MAX_FUNCTION_LINES, "Set up. Long because: hidden mid-line.")
    assert len(check_source("m.py", elsewhere)) == 1


def test_a_long_module_is_a_finding_and_a_pending_split_holds_only_while_it_is_long(
    tmp_path: Path,
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (package / "small.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    findings = check_paths([package], tmp_path)
    message = f"module has {MAX_MODULE_LINES + 1} lines (most allowed {MAX_MODULE_LINES})"
    assert findings == [Finding("pkg/big.py", 1, message, module_size=True)]
    held, rest = apply_pending(findings, {"pkg/big.py": "split elsewhere"}, tmp_path)
    assert (held, rest) == (findings, [])
    # Once the split lands, a leftover entry is itself a finding.
    held, rest = apply_pending([], {"pkg/small.py": "x", "pkg/gone.py": "y"}, tmp_path)
    assert held == []
    assert [(f.path, f.message.split(":")[0]) for f in rest] == [
        ("pkg/gone.py", "is gone"),
        ("pkg/small.py", "fits now"),
    ]


def test_the_product_packages_pass_the_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "testkit.sizes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for path in PENDING_SPLITS:
        assert f"pending: {path}:1: module has" in result.stdout


def test_the_check_reads_code_without_importing_it(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        import module_that_does_not_exist
        raise SystemExit("imported")
        """
    )
    (tmp_path / "bad.py").write_text(source)
    assert check_paths([tmp_path], tmp_path) == []
