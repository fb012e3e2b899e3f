#!/usr/bin/python3
"""check_sizes.py - no function in src/*.c over 120 lines, no file over 1,200.

Usage: scripts/check_sizes.py [--self-test] [FILE.c ...]   (default: src/*.c)

Prints one line per problem and exits 1 if there is any:
    src/main.c:318: function main is 193 lines (max 120)
    src/admin.c: 1438 lines (max 1200)

A function is counted from the line that carries its name to its closing
brace, both included. The code is clang-formatted with Linux braces, so a
function body is the only thing whose '{' stands alone at column 0 (structs,
enums and initialisers open theirs at the end of a line), and its '}' is the
next line starting at column 0 with '}'. The line with the name is the
nearest line above that '{' starting at column 0: the signature's
continuation lines are indented.
"""
import glob
import os
import re
import signal
import sys
import tempfile

MAX_FUNCTION_LINES = 120
MAX_FILE_LINES = 1200

ATTRIBUTE = re.compile(r"__attribute__\s*\(\(.*?\)\)")
NAME_BEFORE_PAREN = re.compile(r"([A-Za-z_]\w*)\s*\(")


def function_name(signature):
    """The identifier before the first '(' of a signature, or '?'."""
    m = NAME_BEFORE_PAREN.search(ATTRIBUTE.sub("", signature))
    return m.group(1) if m else "?"


def functions(lines):
    """Yields (first line number, name, length in lines) for each function."""
    i = 0
    while i < len(lines):
        if lines[i].rstrip() != "{":
            i += 1
            continue
        start = i - 1
        while start >= 0 and (not lines[start] or lines[start][0] in " \t"):
            start -= 1
        end = i + 1
        while end < len(lines) and not lines[end].startswith("}"):
            end += 1
        if start >= 0 and end < len(lines):
            name = function_name(" ".join(l.strip() for l in lines[start:i]))
            yield start + 1, name, end - start + 1
        i = end + 1


def check_file(path, max_function=MAX_FUNCTION_LINES, max_file=MAX_FILE_LINES):
    """The problems of one file, as report lines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    problems = []
    if len(lines) > max_file:
        problems.append("%s: %d lines (max %d)" % (path, len(lines), max_file))
    for line, name, n in functions(lines):
        if n > max_function:
            problems.append(
                "%s:%d: function %s is %d lines (max %d)" % (path, line, name, n, max_function)
            )
    return problems


SELF_TEST_SOURCE = """\
/* a comment { */
struct s {
    int a;
};

static int
old_style(void)
{
    return 0;
}

static enum status long_signature(int a,
                                  int b) __attribute__((unused));
__attribute__((unused)) static int attributed(int a,
                                              int b)
{
    if (a) {
        return b;
    }
fail:
    return a;
}
"""


def self_test():
    lines = SELF_TEST_SOURCE.split("\n")
    got = list(functions(lines))
    want = [(7, "old_style", 4), (14, "attributed", 9)]
    assert got == want, got
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.c")
        with open(path, "w") as f:
            f.write(SELF_TEST_SOURCE)
        assert check_file(path) == []
        assert check_file(path, max_function=8) == [
            "%s:14: function attributed is 9 lines (max 8)" % path
        ], check_file(path, max_function=8)
        assert check_file(path, max_file=20) == ["%s: 22 lines (max 20)" % path]
    print("check_sizes.py: self-test passed")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if any(a.startswith("-") for a in argv[1:]):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = argv[1:]
    if not paths:
        os.chdir(root)
        paths = sorted(glob.glob("src/*.c"))
    problems = []
    for path in paths:
        problems += check_file(path)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    sys.exit(main(sys.argv))
