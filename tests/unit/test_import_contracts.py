"""The layer contract of pyproject.toml holds, and the private-module rule catches an edge."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testkit.import_contracts import private_owner

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(
    cwd: Path, *args: str, pythonpath: list[Path]
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_private_owner_names_the_package_a_private_module_belongs_to() -> None:
    assert private_owner("chat_gateway._store") == "chat_gateway"
    assert private_owner("activities.sandbox._bwrap") == "activities.sandbox"
    assert private_owner("activities._git.sub") == "activities"
    assert private_owner("entrypoints.__main__") is None
    assert private_owner("switchboard.models") is None


def test_the_repository_keeps_every_import_contract() -> None:
    result = _lint_imports(ROOT, pythonpath=[ROOT])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_of_another_packages_private_module_breaks_the_contract(
    tmp_path: Path,
) -> None:
    files = {
        "owner/__init__.py": "",
        "owner/_inner.py": "VALUE = 1\n",
        "owner/sub/__init__.py": "from owner._inner import VALUE\n",  # inside: allowed
        "outsider/__init__.py": "from owner._inner import VALUE\n",  # outside: refused
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\n"
        "root_packages =\n    owner\n    outsider\n"
        "contract_types =\n"
        "    private_modules: testkit.import_contracts.PrivateModulesContract\n"
        "[importlinter:contract:private]\n"
        "name = private modules\n"
        "type = private_modules\n"
        "importers =\n    owner\n    outsider\n"
    )
    result = _lint_imports(tmp_path, pythonpath=[tmp_path, ROOT])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "outsider imports owner._inner, a private module of owner" in result.stdout
    assert "owner.sub imports" not in result.stdout
