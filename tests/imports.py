"""What a module imports, read off its AST: the top-level packages, at run time and under `if TYPE_CHECKING:`."""

import ast
from pathlib import Path


def imported_packages(path: Path) -> tuple[set[str], set[str]]:
    """(imported at run time, imported for type checking only): top-level package names of absolute imports."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    run_time: set[str] = set()
    typing_only: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {node.module.split(".")[0]}
        else:
            continue
        (typing_only if id(node) in type_only else run_time).update(names)
    return run_time, typing_only
