"""An import-linter contract type: no module imports another package's private module.

A module whose name starts with one underscore (`chat_gateway._store`,
`activities.sandbox._bwrap`) belongs to the package that holds it: only that
package and its subpackages may import it. Everyone else goes through the
package's public names. import-linter's own contracts match whole module names
only (a `forbidden` contract cannot say "any `_x` outside its parent"), hence this
small type, registered in pyproject.toml under `[tool.importlinter]`:

    contract_types = ["private_modules: testkit.import_contracts.PrivateModulesContract"]

Dunder modules (`__main__`) are not private. Private *names* inside a module are
outside what an import graph can see; ruff and review cover those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import grimp
from importlinter import Contract, ContractCheck, fields, output

__all__ = ["PrivateModulesContract", "private_owner"]


def private_owner(module: str) -> str | None:
    """The package a private module belongs to (`a._b.c` → `a`), or None if not private."""
    parts = module.split(".")
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@dataclass(frozen=True)
class _Violation:
    importer: str
    imported: str
    owner: str
    lines: tuple[tuple[int, str], ...]


class PrivateModulesContract(Contract):
    """Modules in `importers` (and their descendants) import no private module of
    another package.

    Configuration options:
        - importers: the packages whose imports are checked.
        - ignore_imports: `importer -> imported` pairs allowed anyway (Optional).
    """

    type_name = "private_modules"

    importers = fields.ListField(subfield=fields.StringField())
    ignore_imports = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        ignored = {
            tuple(part.strip() for part in pair.split("->"))
            for pair in cast("list[str]", self.ignore_imports or [])
        }
        packages = cast("list[str]", self.importers)
        violations = [
            violation
            for importer in sorted(graph.modules)
            if any(_inside(importer, package) for package in packages)
            for violation in self._violations_of(graph, importer)
            if (violation.importer, violation.imported) not in ignored
        ]
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    @staticmethod
    def _violations_of(graph: grimp.ImportGraph, importer: str) -> list[_Violation]:
        found = []
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            owner = private_owner(imported)
            if owner is None or _inside(importer, owner):
                continue
            details = graph.get_import_details(importer=importer, imported=imported)
            lines = tuple((d["line_number"], d["line_contents"]) for d in details)
            found.append(_Violation(importer, imported, owner, lines))
        return found

    def render_broken_contract(self, check: ContractCheck) -> None:
        violations: list[_Violation] = check.metadata["violations"]
        for violation in violations:
            output.print_error(
                f"{violation.importer} imports {violation.imported}, "
                f"a private module of {violation.owner}:"
            )
            for number, text in violation.lines:
                output.indent_cursor()
                output.print_error(f"line {number}: {text}", bold=False)
            output.new_line()
