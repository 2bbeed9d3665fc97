#!/usr/bin/env python3
"""Check that no source file imports one that imports it back (`make lint`).

Every `crate::…`, `super::…` and child-module path in src/ (in `use` statements and in
code) is resolved to the file of the deepest module it names; the files and those edges
form the import graph, which must have no cycle. A parent declaring a child (`mod x;`) is
not an import. With --graph, prints the edges.

Exit status: 0 when the graph has no cycle, 1 when it has one (each cycle is printed).
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SRC = os.path.normpath(SRC)


def module_file(parts):
    """The file of module `parts` (a list of names under the crate root), or None."""
    if not parts:
        return os.path.join(SRC, "lib.rs")
    base = os.path.join(SRC, *parts)
    for candidate in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.exists(candidate):
            return candidate
    return None


def module_of(path):
    """The module path (list of names) of a source file."""
    rel = os.path.relpath(path, SRC)[: -len(".rs")].split(os.sep)
    if rel == ["lib"] or rel == ["main"]:
        return []
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def resolve(parts):
    """The file of the deepest module that `parts` (from the crate root) names."""
    found = module_file([])
    for depth in range(1, len(parts) + 1):
        hit = module_file(parts[:depth])
        if hit is None:
            break
        found = hit
    return found


def expand(tree):
    """`a::{b, c::{d, e}}` → ['a::b', 'a::c::d', 'a::c::e'] (aliases and globs dropped)."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0].strip()]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in items:
        if item.strip():
            out.extend(prefix + e for e in expand(item))
    return out


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def paths_in(path):
    """Module paths (from the crate root) that the file at `path` refers to."""
    text = strip_comments(open(path, encoding="utf-8").read())
    # String literals may contain `::` (messages); drop them.
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    here = module_of(path)
    children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, flags=re.M))
    # An inline module (`mod tests { ... }`, at the end of a file by convention) is one level
    # deeper: its `super` is this file's module.
    inline = re.search(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*\{", text, flags=re.M)
    parts_of_text = [(text, here)]
    if inline:
        parts_of_text = [(text[: inline.start()], here), (text[inline.start() :], here + [inline.group(1)])]
    out = []
    for chunk, module in parts_of_text:
        refs = []
        for tree in re.findall(r"\buse\s+([^;]+);", chunk):
            refs.extend(expand(tree))
        refs.extend(re.findall(r"\b(?:crate|super)(?:::\w+)+", chunk))
        for ref in refs:
            parts = [p for p in ref.split("::") if p]
            if not parts:
                continue
            if parts[0] == "crate":
                out.append(parts[1:])
            elif parts[0] == "super":
                base = list(module)
                while parts and parts[0] == "super":
                    base = base[:-1]
                    parts = parts[1:]
                out.append(base + parts)
            elif parts[0] == "self":
                out.append(module + parts[1:])
            elif parts[0] in children:
                out.append(here + parts)
    return out


def graph():
    files = []
    for root, _, names in os.walk(SRC):
        files.extend(os.path.join(root, n) for n in names if n.endswith(".rs"))
    edges = {}
    for f in sorted(files):
        targets = set()
        for parts in paths_in(f):
            target = resolve(parts)
            if target and target != f:
                targets.add(target)
        edges[f] = targets
    return edges


def cycles(edges):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    rel = lambda p: os.path.relpath(p, SRC)
    if "--graph" in sys.argv[1:]:
        for f in sorted(edges):
            print(f"{rel(f)} -> {', '.join(sorted(rel(t) for t in edges[f])) or '(nothing)'}")
    found = cycles(edges)
    for component in found:
        print("import cycle: " + " <-> ".join(sorted(rel(f) for f in component)), file=sys.stderr)
    if found:
        return 1
    print(f"imports: {sum(len(t) for t in edges.values())} edges between {len(edges)} files, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
