#!/usr/bin/python3
"""check_layers.py - src/ includes only go down the layers of scripts/layers.txt.

Usage: scripts/check_layers.py [--self-test]

scripts/layers.txt gives each module (a file's base name: `pool` covers
pool.c and pool.h; globs such as `admin_*` allowed; `auth+scram` makes
one module of several names, for files that are one concern split in two)
a numbered layer. Every
`#include "x.h"` in src/*.c and src/*.h is checked:
  - a file may include headers of its own layer or of lower ones:
        src/tls.c:19: tls (layer 2 stream) includes pool (layer 3 core)
  - modules of one layer may not include each other round a cycle:
        src/a.c:3: include cycle in layer 3 core: a -> b -> a (b -> a: src/b.h:7)
  - every file in src/ must be covered by the table.
Prints one line per problem and exits 1 if there is any (2: bad usage).
"""
import fnmatch
import os
import re
import signal
import sys
import tempfile

TABLE = "scripts/layers.txt"
SRC = "src"

LAYER_LINE = re.compile(r"^(\d+)\s+([\w-]+)\s*:\s*(.*)$")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


class Table:
    """The layers: exact module names and globs, each with (number, name)."""

    def __init__(self):
        self.exact = {}  # module -> (number, name)
        self.globs = []  # (pattern, (number, name))
        self.group = {}  # file base name -> the module it belongs to (a+b: b -> a)
        self.problems = []

    def load(self, path):
        seen_numbers = {}
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                m = LAYER_LINE.match(line)
                if not m:
                    self.problems.append(
                        "%s:%d: expected `NUMBER NAME: MODULE ...`" % (path, lineno)
                    )
                    continue
                layer = (int(m.group(1)), m.group(2))
                if layer[0] in seen_numbers:
                    self.problems.append(
                        "%s:%d: layer %d is already defined on line %d"
                        % (path, lineno, layer[0], seen_numbers[layer[0]])
                    )
                seen_numbers[layer[0]] = lineno
                for module in m.group(3).replace(",", " ").split():
                    if "+" in module:
                        names = module.split("+")
                        module = names[0]
                        for member in names:
                            self.group[member] = module
                    if any(ch in module for ch in "*?["):
                        self.globs.append((module, layer))
                    elif module in self.exact and self.exact[module] != layer:
                        self.problems.append(
                            "%s:%d: %s is already in layer %d %s"
                            % (path, lineno, module, *self.exact[module])
                        )
                    else:
                        self.exact[module] = layer
        return self

    def layer_of(self, module):
        """(number, name), or None if no entry covers module. An exact
        name wins over globs; globs of different layers are ambiguous."""
        if module in self.exact:
            return self.exact[module]
        layers = sorted(
            {layer for pattern, layer in self.globs if fnmatch.fnmatchcase(module, pattern)}
        )
        if len(layers) > 1:
            self.problems.append(
                "%s: %s matches globs of layers %s: name it exactly"
                % (TABLE, module, " and ".join("%d %s" % l for l in layers))
            )
        return layers[0] if layers else None


GROUPS = {}  # file base name -> module, from the table being checked


def module_of(path):
    base = os.path.splitext(os.path.basename(path))[0]
    return GROUPS.get(base, base)


def includes(path):
    """Yields (line number, included header) for each #include "x"."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield lineno, m.group(1)


def find_cycle(scc, edges):
    """A shortest cycle through the first module of scc, as a module list
    ending where it starts (a strongly connected set always has one)."""
    start = min(scc)
    paths = {start: [start]}
    queue = [start]
    while queue:
        a = queue.pop(0)
        for b in sorted(edges.get(a, {})):
            if b == start:
                return paths[a] + [start]
            if b in scc and b not in paths:
                paths[b] = paths[a] + [b]
                queue.append(b)
    return [start, start]


def strongly_connected(nodes, edges):
    """Tarjan's algorithm: the strongly connected sets of the graph."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            out.append(scc)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check(src=SRC, table_path=TABLE):
    """All problems, as report lines."""
    table = Table().load(table_path)
    GROUPS.clear()
    GROUPS.update(table.group)
    files = sorted(
        os.path.join(src, n) for n in os.listdir(src) if os.path.isfile(os.path.join(src, n))
    )
    src_modules = {module_of(p) for p in files}
    unknown, bad, cycles = [], [], []
    for path in files:
        if table.layer_of(module_of(path)) is None:
            unknown.append(
                "%s: module %s is not in %s: add it to %s"
                % (path, module_of(path), table_path, table_path)
            )
    # edges[a][b]: where module a first includes b (same layer only).
    edges = {}
    for path in files:
        if not path.endswith((".c", ".h")):
            continue
        mod = module_of(path)
        layer = table.layer_of(mod)
        if layer is None:
            continue
        for lineno, header in includes(path):
            inc = module_of(header)
            if inc == mod:
                continue
            inc_layer = table.layer_of(inc)
            if inc_layer is None:
                if inc not in src_modules:
                    bad.append(
                        "%s:%d: includes %s, whose module %s is not in %s"
                        % (path, lineno, header, inc, table_path)
                    )
                continue
            if inc_layer[0] > layer[0]:
                bad.append(
                    "%s:%d: %s (layer %d %s) includes %s (layer %d %s)"
                    % (path, lineno, mod, layer[0], layer[1], inc, inc_layer[0], inc_layer[1])
                )
            elif inc_layer == layer:
                edges.setdefault(mod, {}).setdefault(inc, "%s:%d" % (path, lineno))
    for scc in strongly_connected(edges.keys(), edges):
        if len(scc) < 2:
            continue
        cycle = find_cycle(scc, edges)
        layer = table.layer_of(cycle[0])
        where = ["%s -> %s: %s" % (a, b, edges[a][b]) for a, b in zip(cycle[1:], cycle[2:])]
        line = "%s: include cycle in layer %d %s: %s" % (
            edges[cycle[0]][cycle[1]],
            layer[0],
            layer[1],
            " -> ".join(cycle),
        )
        if where:
            line += " (%s)" % "; ".join(where)
        others = sorted(scc - set(cycle))
        if others:
            line += "; also tangled in it: %s" % ", ".join(others)
        cycles.append(line)
    table_problems = list(dict.fromkeys(table.problems))  # an ambiguous module, once
    return table_problems + unknown + sorted(bad, key=sort_key) + sorted(cycles)


def sort_key(line):
    path, lineno = line.split(":")[:2]
    return path, int(lineno)


def self_test():
    files = {
        "src/a.c": '#include "a.h"\n#include "b.h"\n#include <stdio.h>\n',
        "src/a.h": '#include "list.h"\n',
        "src/b.h": '#include "c.h"\n',
        "src/c.c": '#include "b.h"\n  #  include "top.h"\n#include "gone.h"\n',
        "src/list.h": "",
        "src/top_x.c": '#include "a.h"\n',
        "src/stray.c": '#include "top.h"\n',
        "scripts/layers.txt": "# comment\n0 base: list\n1 mid: a, b c\n2 high: top top_*\n",
    }
    want = [
        "src/stray.c: module stray is not in scripts/layers.txt: add it to scripts/layers.txt",
        "src/c.c:2: c (layer 1 mid) includes top (layer 2 high)",
        "src/c.c:3: includes gone.h, whose module gone is not in scripts/layers.txt",
        "src/b.h:1: include cycle in layer 1 mid: b -> c -> b (c -> b: src/c.c:1)",
    ]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        try:
            for name, text in files.items():
                os.makedirs(os.path.dirname(name), exist_ok=True)
                with open(name, "w") as f:
                    f.write(text)
            got = check()
        finally:
            os.chdir(cwd)
    assert got == want, "\n".join(got)
    print("check_layers.py: self-test passed")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if argv[1:]:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    problems = check()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    sys.exit(main(sys.argv))
