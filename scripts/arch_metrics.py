"""Architecture figures of the source tree: files over 600 lines, functions over 80 lines (numeric
kernels listed apart), and the import graph's cycles counting imports placed inside functions.

    python scripts/arch_metrics.py [--json]
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "agents")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_kernel(node: ast.AST) -> bool:
    for d in getattr(node, "decorator_list", []):
        src = ast.unparse(d)
        if "njit" in src or "numba" in src or src.startswith("jit"):
            return True
    return False


def main() -> None:
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    mods = {module_name(p): p for p in files}
    long_files, long_funcs, graph = [], [], {}
    for name, p in mods.items():
        text = p.read_text()
        n = text.count("\n")
        if n > 600:
            long_files.append((str(p.relative_to(ROOT)), n))
        tree = ast.parse(text)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long_funcs.append((f"{p.relative_to(ROOT)}:{node.name}", length, is_kernel(node)))
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    # strongly connected components (Tarjan)
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    sim_to_agents = sorted(m for m, d in graph.items() if m.startswith("sim") and any(x.startswith("agents") for x in d))
    out = {
        "files_over_600": sorted(long_files, key=lambda x: -x[1]),
        "functions_over_80": sorted([f for f in long_funcs if not f[2]], key=lambda x: -x[1]),
        "kernels_over_80": sorted([f for f in long_funcs if f[2]], key=lambda x: -x[1]),
        "import_cycles": sorted(sccs, key=len, reverse=True),
        "sim_modules_importing_agents": sim_to_agents,
    }
    if "--json" in sys.argv:
        print(json.dumps(out, indent=1))
        return
    print(f"files over 600 lines: {len(long_files)}")
    for f, n in out["files_over_600"]:
        print(f"  {n:5d} {f}")
    print(f"functions over 80 lines (kernels apart): {len(out['functions_over_80'])}")
    for f, n, _ in out["functions_over_80"][:40]:
        print(f"  {n:5d} {f}")
    print(f"import cycles: {len(sccs)}; largest {len(out['import_cycles'][0]) if sccs else 0} modules")
    for c in out["import_cycles"]:
        print("  ", len(c), ", ".join(c[:20]), "..." if len(c) > 20 else "")
    print(f"sim modules importing agents: {len(sim_to_agents)}: {', '.join(sim_to_agents)}")


if __name__ == "__main__":
    main()
