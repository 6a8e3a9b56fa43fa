#!/usr/bin/env python3
"""The import graph between the top-level modules of src/ (the library, and
`app`, the binary's own modules), from the `crate::X` and `lrp_heatmap::X`
paths in the code (doc comments and unit-test modules excluded).

Prints each module with the modules it imports, in layers (a module only
imports modules of lower layers), and exits 1 with the cycle if there is one.
README.md ("Layout") draws its output. Run: python3 scripts/modgraph.py
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def top_module(rel):
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def code_of(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def graph():
    edges = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            top = top_module(os.path.relpath(path, SRC))
            if top in ("lib", "main"):
                continue
            deps = edges.setdefault(top, set())
            code = code_of(path)
            deps.update(re.findall(r"\bcrate::(\w+)", code))
            deps.update(re.findall(r"\blrp_heatmap::(\w+)", code))
    return {m: {d for d in ds if d in edges and d != m} for m, ds in edges.items()}


def layers(edges):
    done, out, left = set(), [], set(edges)
    while left:
        layer = sorted(m for m in left if edges[m] <= done)
        if not layer:
            return out, sorted(left)
        out.append(layer)
        done |= set(layer)
        left -= set(layer)
    return out, []


def main():
    edges = graph()
    out, cyclic = layers(edges)
    for k, layer in enumerate(out):
        for m in layer:
            deps = ", ".join(sorted(edges[m])) or "-"
            print(f"layer {k}: {m:<10} imports {deps}")
    if cyclic:
        print("import cycle among:", " ".join(cyclic))
        sys.exit(1)
    print(f"{len(edges)} modules, no import cycle")


if __name__ == "__main__":
    main()
