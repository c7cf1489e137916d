#!/usr/bin/env python3
"""Fail on an import cycle between the top-level modules of the agent crate (DESIGN.md section 2).

Usage: scripts/check-layers.py [--allow MOD,MOD,...]... [SRC_DIR]    (default: crates/aks-flex-node/src)

A top-level module is a directory with a mod.rs, or a .rs file, directly under SRC_DIR (lib.rs and main.rs
are roots, not modules). Module A depends on B when a file of A names `crate::B` (`use crate::B::...`,
`crate::B::f()`, or `B` inside `use crate::{...}`); comment lines do not count, test code does. Any
strongly connected set of modules that is not exactly one entry of ALLOWED below fails the check (exit 1)
with one cycle spelled out and the file:line of each reference on it. An ALLOWED entry that is no longer a
cycle fails too, so a cycle once removed cannot come back unnoticed. `--allow` adds an entry for this run
(scripts/check-layers-test.sh uses it to exercise the allow-list on fake trees).
"""

import os
import re
import sys
from collections import deque

# Cycles that exist today and are known, each with the references that make it a cycle. Each entry is the
# exact set of modules in the cycle; a new module joining it, or any other cycle, fails the check.
# Remove an entry when its cycle is gone (the check says so). Empty since typed actions broke the last one
# (artifacts <-> steps).
ALLOWED = []

REF = re.compile(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def modules(src):
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "mod.rs")):
            mods[entry] = path
        elif entry.endswith(".rs") and entry not in ("lib.rs", "main.rs") and os.path.isfile(path):
            mods[entry[:-3]] = path
    return mods


def rust_files(path):
    if os.path.isfile(path):
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(root, f)


def group_heads(text, start):
    """Top-level names inside the braces of `use crate::{...}` opening at text[start] == '{'."""
    depth, heads, expect = 0, [], True
    i = start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            expect = depth == 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        elif c == "," and depth == 1:
            expect = True
        elif expect and depth == 1:
            m = IDENT.match(text, i)
            if m:
                heads.append(m.group(0))
                expect = False
                i = m.end()
                continue
        i += 1
    return heads


def strip_comment_lines(text):
    """The text with every line whose code part is only a `//` comment blanked (line numbers kept)."""
    return "\n".join("" if ln.lstrip().startswith("//") else ln for ln in text.split("\n"))


def edges(src, mods):
    """{(from, to): [(file, line), ...]} for every reference between two different top-level modules."""
    found = {}
    for mod, path in mods.items():
        for f in rust_files(path):
            with open(f, encoding="utf-8") as fh:
                text = strip_comment_lines(fh.read())
            hits = [(m.start(), m.group(1)) for m in REF.finditer(text)]
            for m in GROUP.finditer(text):
                hits += [(m.start(), h) for h in group_heads(text, m.end() - 1)]
            for pos, target in sorted(hits):
                if target in mods and target != mod:
                    line = text.count("\n", 0, pos) + 1
                    found.setdefault((mod, target), []).append((f, line))
    return found


def components(nodes, graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def shortest_path(graph, start, goal, within):
    prev, queue = {start: None}, deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in sorted(graph.get(v, ())):
            if w in within and w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def allowed_edge(a, b):
    return any(a in s and b in s for s in ALLOWED)


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    args = argv[1:]
    while len(args) >= 2 and args[0] == "--allow":
        ALLOWED.append(set(args[1].split(",")))
        args = args[2:]
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    src = args[0] if args else os.path.relpath(os.path.join(here, "..", "crates/aks-flex-node/src"))
    if not os.path.isdir(src):
        print(f"check-layers: {src} is not a directory", file=sys.stderr)
        return 2
    mods = modules(src)
    refs = edges(src, mods)
    graph = {}
    for a, b in refs:
        graph.setdefault(a, set()).add(b)

    failed = False
    comps = components(mods, graph)
    for comp in comps:
        if comp in ALLOWED:
            continue
        failed = True
        # Spell out the shortest cycle through a reference that no ALLOWED entry covers.
        inside = sorted((a, b) for (a, b) in refs if a in comp and b in comp)
        new = [e for e in inside if not allowed_edge(*e)] or inside
        cycle = min(([a] + shortest_path(graph, b, a, comp) for a, b in new), key=len)
        print(f"check-layers: import cycle between top-level modules: {' -> '.join(cycle)}", file=sys.stderr)
        if len(comp) > len(cycle) - 1:
            print(f"  (one of several: {', '.join(sorted(comp))} all reach each other)", file=sys.stderr)
        for x, y in zip(cycle, cycle[1:]):
            f, line = refs[(x, y)][0]
            more = len(refs[(x, y)]) - 1
            note = " (allowed alone: part of a known cycle)" if allowed_edge(x, y) else ""
            also = f" (+{more} more)" if more else ""
            print(f"  {x} -> {y}: {f}:{line}{also}{note}", file=sys.stderr)
    for s in ALLOWED:
        if not any(s <= comp for comp in comps):
            failed = True
            print(
                f"check-layers: {{{', '.join(sorted(s))}}} is no longer a cycle: remove it from ALLOWED in "
                f"{os.path.relpath(os.path.abspath(__file__))}",
                file=sys.stderr,
            )
    if failed:
        return 1
    known = "; ".join(" <-> ".join(sorted(s)) for s in ALLOWED) or "none"
    print(f"check-layers: no import cycle between the {len(mods)} top-level modules of {src} (known: {known})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
