"""Structure figures of service/: the largest classes and functions, import cycles, and the
modules the serving process holds once started.

`python -m clients.structure` (run from the repository root; grimp comes with import-linter
in the dev extra). The house issue (13) reported these before and after its refactor.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SERVICE = Path("service")
HEAVY = ("torch", "sklearn", "skl2onnx", "onnx", "pyarrow", "PIL")

_STARTED_SERVER = r"""
import asyncio, json, sys, tempfile
from pathlib import Path
from prometheus_client import CollectorRegistry
from service.app import build_app
from service.settings import Settings

async def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            data_dir=Path(data), host="127.0.0.1", port=0, metrics_port=0, warm_workers=False
        )
        app = build_app(settings, CollectorRegistry())
        await app.start()
        count = len(sys.modules)
        heavy = sorted(name for name in HEAVY if name in sys.modules)
        await app.stop(grace=0.1)
        print(json.dumps({"modules": count, "heavy_loaded": heavy}))

HEAVY = %r
asyncio.run(main())
"""


def largest(top: int = 4) -> dict[str, list[tuple[int, str]]]:
    """The longest classes and functions (lines), generated code left out."""
    found: dict[str, list[tuple[int, str]]] = {"class": [], "function": []}
    for path in SERVICE.rglob("*.py"):
        if "gen" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                kind = "class"
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                kind = "function"
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            found[kind].append((lines, f"{path}:{node.name}"))
    return {kind: sorted(rows, reverse=True)[:top] for kind, rows in found.items()}


def import_cycles() -> list[list[str]]:
    """Strongly connected sets of service/ modules (imports inside functions included)."""
    import grimp

    graph = grimp.build_graph("service", exclude_type_checking_imports=True)
    modules = sorted(m for m in graph.modules if not m.startswith("service.gen"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index and imported in modules:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return cycles


def started_server() -> dict[str, Any]:
    """Modules a started serving process holds (in a fresh interpreter, warm workers off)."""
    done = subprocess.run(
        [sys.executable, "-c", _STARTED_SERVER % (HEAVY,)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    report = {
        "largest": largest(),
        "import_cycles": import_cycles(),
        "serving_process": started_server(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
