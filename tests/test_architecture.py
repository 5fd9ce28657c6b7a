"""The layering rules of shared/DESIGN.md, checked on the source: the import graph of ddmkit has no
circle, only the command layer sees argparse or the environment, imports of ddmkit's own modules sit
at the top of each module, and functions stay short."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ddmkit"
COMMAND_LAYER = ("cli.py", "commands/", "__main__.py")
LONG = 60
# network definitions and the face renderer are long by nature (the stated exceptions)
LONG_ALLOWED = {"data/faces.py:render_faces", "models/ncsnpp.py:NCSNppResidualUNet2DModel.__init__"}


def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(SRC)): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["ddmkit", *parts])


def imported(rel: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute names of the ddmkit modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "ddmkit"]
    base = module_name(rel).split(".")
    if not rel.endswith("__init__.py"):
        base = base[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "ddmkit":
        return []
    return [target] + [f"{target}.{a.name}" for a in node.names]


def graph() -> dict[str, set[str]]:
    mods = modules()
    names = {module_name(r) for r in mods}
    g: dict[str, set[str]] = {module_name(r): set() for r in mods}
    for rel, tree in mods.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in imported(rel, node):
                    if t in names and t != module_name(rel):
                        g[module_name(rel)].add(t)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan); packages importing their own
    submodules (`ddmkit.dmcmc` re-exporting `ddmkit.dmcmc.dlg`) are not edges back."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def edges(v):
        return [w for w in g[v] if not (w.startswith(v + ".") or v.startswith(w + ".") and w == "ddmkit")]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges(v):
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
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    assert cycles(graph()) == []


def test_only_the_command_layer_sees_argparse_or_the_environment_for_behaviour():
    offenders = []
    for rel, tree in modules().items():
        if rel.startswith(COMMAND_LAYER):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                offenders.append(f"{rel}: imports argparse")
            if isinstance(node, ast.ImportFrom) and node.module == "argparse":
                offenders.append(f"{rel}: imports argparse")
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                offenders.append(f"{rel}:{node.lineno}: reads the environment")
    allowed = {  # where the environment names a place (a cache) or a launcher's contract, not a test hook
        "cache.py": "DDMKIT_CACHE_DIR / XDG_CACHE_HOME: where caches and lock files live",
        "distributed.py": "torchrun's RANK / WORLD_SIZE / MASTER_ADDR",
    }
    assert [o for o in offenders if o.split(":")[0] not in allowed] == []


def test_imports_of_ddmkit_modules_are_at_the_top():
    inside = []
    for rel, tree in modules().items():
        if rel.startswith(COMMAND_LAYER):
            continue  # a command's `run` may import its library lazily (a fast `ddmkit --help`)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and imported(rel, node):
                        inside.append(f"{rel}:{node.lineno} in {fn.name}")
    assert inside == []


def test_functions_are_at_most_60_lines():
    long = []
    for rel, tree in modules().items():
        for cls in [None, *[n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]]:
            body = tree.body if cls is None else cls.body
            for fn in body:
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = fn.name if cls is None else f"{cls.name}.{fn.name}"
                    n = fn.end_lineno - fn.lineno + 1
                    if n > LONG and f"{rel}:{name}" not in LONG_ALLOWED:
                        long.append(f"{rel}:{name} ({n} lines)")
    assert long == []
