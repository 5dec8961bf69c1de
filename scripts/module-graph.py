#!/usr/bin/env python3
"""Graph of crate-module references among src/*.rs; exits 1 on a cycle.

src/X/*.rs counts as X; `super::` in src/X/Y.rs means X. Code only: lines
that are comments (//, ///, //!) are skipped, so intra-doc links do not count.
The crate root (lib.rs: Error, run, Summary, re-exports) is listed apart.
"""
import glob, os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
src = os.path.join(root, "src")
mods = {}
for p in sorted(glob.glob(f"{src}/*.rs") + glob.glob(f"{src}/*/*.rs")):
    rel = os.path.relpath(p, src)
    parts = rel[:-3].split("/")
    mods.setdefault(parts[0], []).append((p, len(parts) > 1))
known = set(mods) - {"lib", "main"}

def code(text):
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))

def targets(text, in_sub, me):
    out = set()
    for m in re.finditer(r"\bcrate::(\{|[A-Za-z_]\w*)", text):
        if m.group(1) == "{":
            depth, i, start, items = 1, m.end(), m.end(), []
            while depth:
                c = text[i]
                if c == "{": depth += 1
                elif c == "}": depth -= 1
                if (c == "," and depth == 1) or depth == 0:
                    items.append(text[start:i]); start = i + 1
                i += 1
            for it in items:
                w = re.match(r"\s*([A-Za-z_]\w*)", it)
                if w: out.add(w.group(1))
        else:
            out.add(m.group(1))
    if in_sub:
        for m in re.finditer(r"\bsuper::(\{|[A-Za-z_]\w*)", text):
            out.add(me)
    return out

edges, rootrefs = {}, {}
for me, files in mods.items():
    if me in ("lib", "main"):
        continue
    for p, sub in files:
        for t in targets(code(open(p).read()), sub, me):
            if t == me:
                continue
            if t in known:
                edges.setdefault(me, set()).add(t)
            else:
                rootrefs.setdefault(me, set()).add(t)

for a in sorted(known):
    print(f"{a} -> {', '.join(sorted(edges.get(a, ()))) or '(none)'}")
if rootrefs:
    print("\ncrate-root items used (lib.rs):")
    for a in sorted(rootrefs):
        print(f"  {a}: {', '.join(sorted(rootrefs[a]))}")

# Tarjan SCC
idx, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def strong(v):
    idx[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in sorted(edges.get(v, ())):
        if w not in idx:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
for v in sorted(known):
    if v not in idx: strong(v)
if sccs:
    print("\nCYCLES (strongly connected groups):")
    for c in sccs: print("  " + " <-> ".join(c))
    sys.exit(1)
print(f"\nno cycle among {len(known)} modules")
