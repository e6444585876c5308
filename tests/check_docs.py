#!/usr/bin/env python3
"""Every ```c block in README.md and docs/*.md compiles, with warnings as errors.

What is done with a block depends on the HTML comments on the lines right before its fence
(one directive per comment; several comments may stack):

  (none)                    a whole program: compiled and linked against the library in the
                            build directory
  <!-- name: FILE -->       a whole program, also saved as FILE so that later blocks of the same
                            page can #include "FILE" and `excerpt` blocks can point at it
  <!-- run -->              a whole program, compiled, linked and run in the page's directory
                            (where `name` blocks were saved); it must exit with status 0
  <!-- fragment -->         not a whole program: compiled, not linked, after a prelude that
                            includes <fcrest.h>, <ev.h>, <stdbool.h>, <stdio.h>, <stdlib.h> and
                            <string.h> (unused static functions allowed)
  <!-- excerpt: FILE -->    a piece of the block named FILE on the same page, line for line
                            (checked, not compiled on its own)
  <!-- fcgx -->             a whole program on the reference devkit's fcgiapp.h, linked with
                            -lfcgi (skipped, and said so, when fcgiapp.h is not installed)
  <!-- same-as: PATH -->    the block is the file PATH of the source tree, byte for byte; it is
                            also compiled and linked as a whole program

A block whose first line is the first line of examples/NAME.c (for README.md's tutorial:
"/* tutorial.c: ...") is taken as a copy of that example and must equal it, as with same-as.

Flags: -std=c11 -Wall -Wextra -Wpedantic -Werror.

Then the typed verdicts are checked with the same compiler and flags: callbacks declared with
their verdict type (fcr_handler_result, fcr_before_result, fcr_auth_result) compile when they
return their own kind's constants and fail to compile when they return another kind's (a
before-middleware returning FCR_ASYNC), an FCR_E... constant itself, or when a callback is
registered as another kind (VERDICT_CASES below).

Then the options of fcr_app_run() (the --help of examples/hello in the build directory) are
compared with the option table of docs/configuration.md: every option --help lists (but --help
itself) has a row and every row an option, with the same argument name, the same environment
variable (the first one the row names) and the default --help shows.

The last line of output is a summary: "docs: N samples compiled (M linked, K run), E excerpts
found, S skipped, V verdict checks, O options checked, F failed".

Usage: check_docs.py --source DIR --build DIR [--cc "COMPILER ..."] [--sanitize LIST]
                     [--lib FILE] [--testing-lib FILE]
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile

FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
PRELUDE = """#include <fcrest.h>
#include <ev.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#line 1 "fragment"
"""
KNOWN = ("name", "run", "fragment", "excerpt", "fcgx", "same-as")
RUN_TIMEOUT = 120

# The typed-verdict guarantee: (what, callback kind, returned expression, the function it is
# registered with, whether it must compile). A refusal must be the compiler's warning about
# the verdict: -Wenum-conversion (gcc: in -Wextra; clang: on by default) or incompatible
# function pointer types.
HANDLER = ("fcr_handler_result", "fcr_req *req, fcr_res *res, void *data")
BEFORE = ("fcr_before_result", "fcr_req *req, fcr_res *res, void *data")
AUTH = ("fcr_auth_result", "fcr_req *req, fcr_res *res, fcr_auth *auth, void *data")
VERDICT_CASES = [
    ("before-middleware returning FCR_STOP", BEFORE, "FCR_STOP", "fcr_app_before", True),
    ("before-middleware returning FCR_CONTINUE", BEFORE, "FCR_CONTINUE", "fcr_app_before", True),
    ("before-middleware returning FCR_ASYNC", BEFORE, "FCR_ASYNC", "fcr_app_before", False),
    ("before-middleware returning FCR_DENY", BEFORE, "FCR_DENY", "fcr_app_before", False),
    ("handler returning FCR_DONE", HANDLER, "FCR_DONE", "fcr_app_set_filter", True),
    ("handler returning FCR_ASYNC", HANDLER, "FCR_ASYNC", "fcr_app_set_filter", True),
    ("handler returning a failed call's int", HANDLER, "fcr_res_set_status(res, 200)",
     "fcr_app_set_filter", True),
    ("handler returning FCR_HANDLER_ERROR", HANDLER, "FCR_HANDLER_ERROR", "fcr_app_set_filter",
     True),
    ("handler returning FCR_STOP", HANDLER, "FCR_STOP", "fcr_app_set_filter", False),
    ("handler returning FCR_ALLOW", HANDLER, "FCR_ALLOW", "fcr_app_set_filter", False),
    ("handler returning FCR_ENOMEM itself", HANDLER, "FCR_ENOMEM", "fcr_app_set_filter", False),
    ("authorizer returning FCR_DENY", AUTH, "FCR_DENY", "fcr_app_guard", True),
    ("authorizer returning FCR_CONTINUE", AUTH, "FCR_CONTINUE", "fcr_app_guard", False),
    ("authorizer returning FCR_DONE", AUTH, "FCR_DONE", "fcr_app_guard", False),
    ("handler registered as a before-middleware", HANDLER, "FCR_DONE", "fcr_app_before", False),
    ("before-middleware registered as a handler", BEFORE, "FCR_CONTINUE", "fcr_app_set_filter",
     False),
]


def verdict_source(kind, value, register):
    rtype, params = kind
    used = "(void)req, (void)res, (void)data;"
    if "auth" in params:
        used = "(void)req, (void)res, (void)auth, (void)data;"
    return f"""#include <fcrest.h>

static {rtype} cb({params})
{{
    {used}
    return {value};
}}

int reg(fcr_app *app);
int reg(fcr_app *app)
{{
    return {register}(app, cb, NULL);
}}
"""


def parse_blocks(text):
    """Yields (line number of the fence, directives, code) for every ```c block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```c":
            i += 1
            continue
        start = i
        directives = []
        j = i - 1
        while j >= 0:
            m = re.fullmatch(r"\s*<!--\s*(.*?)\s*-->\s*", lines[j])
            if not m:
                break
            key, _, value = m.group(1).partition(":")
            directives.insert(0, (key.strip(), value.strip()))
            j -= 1
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: the C block is not closed")
        i += 1
        yield start + 1, directives, "\n".join(body) + "\n"


def help_options(text):
    """{option: (argument or None, variable or None, default or None)} from --help output: fcrest's
    own options, up to the heading of the program's."""
    found = {}
    entries = []
    for line in text.split("\n"):
        if line.startswith("Options of ") and entries:
            break
        m = re.match(r"  (--[a-z0-9_-]+)(?: ([A-Z]+))?(?:\s|$)", line)
        if m:
            entries.append([m.group(1), m.group(2), line[m.end():]])
        elif entries and line.startswith("   "):
            entries[-1][2] += " " + line.strip()
    for name, arg, rest in entries:
        env = re.search(r"\[([A-Z0-9_]+)\]", rest)
        default = re.search(r"\(default ([^)]+)\)", rest)
        found[name] = (arg, env.group(1) if env else None, default.group(1) if default else None)
    return found


def doc_options(text):
    """{option: (argument or None, variable or None, default column)} from the table under
    "## Options and environment variables" in docs/configuration.md."""
    section = text.split("## Options and environment variables", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.split("\n"):
        if not line.startswith("| `--"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"`(--[a-z0-9_-]+)(?: ([A-Z]+))?`", cells[0])
        env = re.search(r"`([A-Z][A-Z0-9_]*)`", cells[1])
        found[m.group(1)] = (m.group(2), env.group(1) if env else None, cells[3])
    return found


def check_options(source, build, fail):
    """Compares examples/hello --help with docs/configuration.md; returns the options checked."""
    hello = os.path.join(build, "examples", "hello")
    where = "docs/configuration.md: options"
    try:
        r = subprocess.run([hello, "--help"], capture_output=True, text=True, timeout=30)
        with open(os.path.join(source, "docs", "configuration.md"), encoding="utf-8") as f:
            docs = doc_options(f.read())
    except (OSError, subprocess.TimeoutExpired, IndexError, AttributeError) as e:
        fail(where, f"cannot compare the options: {e!r}")
        return 0
    if r.returncode != 0:
        fail(where, f"{hello} --help ended with {r.returncode}")
        return 0
    helped = help_options(r.stdout)
    helped.pop("--help", None)
    if not helped:
        fail(where, f"no option found in the output of {hello} --help")
        return 0
    for name in sorted(set(helped) - set(docs)):
        fail(where, f"{name} is in --help but has no row")
    for name in sorted(set(docs) - set(helped)):
        fail(where, f"{name} has a row but is not in --help")
    checked = 0
    for name in sorted(set(helped) & set(docs)):
        (arg, env, default), (doc_arg, doc_env, doc_default) = helped[name], docs[name]
        if arg != doc_arg:
            fail(where, f"{name}: argument {arg} in --help, {doc_arg} in the row")
        elif env != doc_env:
            fail(where, f"{name}: variable {env} in --help, {doc_env} in the row")
        elif default is not None and default not in doc_default:
            fail(where, f"{name}: default {default} in --help, not in the row's {doc_default!r}")
        else:
            checked += 1
    return checked


def pkg_flags(*args):
    r = subprocess.run(["pkg-config", *args], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--sanitize", default="none")
    ap.add_argument("--lib", help="the built library file to link (default: -lfcrest from --build)")
    ap.add_argument("--testing-lib", help="the built libfcrest-testing.a, linked first")
    opt = ap.parse_args()

    cc = shlex.split(opt.cc)
    san = [] if opt.sanitize in ("", "none") else ["-fsanitize=" + opt.sanitize]
    include = ["-I", os.path.join(opt.source, "include")] + pkg_flags("--cflags", "jansson")
    if opt.lib:
        # The file itself: a build directory may lack the libfcrest.so development link.
        lib = os.path.abspath(opt.lib)
        libs = [lib, "-Wl,-rpath," + os.path.dirname(lib)]
        static = lib.endswith(".a")
    else:
        libs = ["-L", opt.build, "-Wl,-rpath," + os.path.abspath(opt.build), "-lfcrest"]
        static = not glob.glob(os.path.join(opt.build, "libfcrest.so*"))
    if opt.testing_lib:
        libs = [os.path.abspath(opt.testing_lib)] + libs
    if static:
        libs += pkg_flags("--libs", "libpcre2-8")  # a static library brings no dependencies
    libs += pkg_flags("--libs", "jansson") + ["-lev"]

    def compile_(workdir, code, out, extra_flags, link_flags):
        src = os.path.join(workdir, "sample.c")
        with open(src, "w", encoding="utf-8") as f:
            f.write(code)
        cmd = cc + FLAGS + san + extra_flags + ["-I", workdir, src, "-o", out] + link_flags
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
        return r.returncode == 0, r.stderr

    with tempfile.TemporaryDirectory(prefix="fcrest-docs-") as probe:
        have_fcgx = compile_(probe, "#include <fcgiapp.h>\nint probe(void);\n",
                             os.path.join(probe, "p.o"), ["-c"], [])[0]

    pages = [os.path.join(opt.source, "README.md")]
    pages += sorted(glob.glob(os.path.join(opt.source, "docs", "*.md")))
    examples = {}
    for path in glob.glob(os.path.join(opt.source, "examples", "*.c")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        examples[text.split("\n", 1)[0]] = (os.path.relpath(path, opt.source), text)

    counts = dict(compiled=0, linked=0, run=0, excerpts=0, skipped=0, failed=0)

    def fail(where, msg):
        print(f"{where}: {msg}")
        counts["failed"] += 1

    for page in pages:
        rel = os.path.relpath(page, opt.source)
        try:
            with open(page, encoding="utf-8") as f:
                blocks = list(parse_blocks(f.read()))
        except (OSError, ValueError) as e:
            fail(rel, str(e))
            continue
        named = {}
        excerpts = []
        with tempfile.TemporaryDirectory(prefix="fcrest-docs-") as workdir:
            for line, directives, code in blocks:
                where = f"{rel}:{line}"
                d = dict(directives)
                unknown = [k for k, _ in directives if k not in KNOWN]
                if unknown:
                    fail(where, f"unknown directive {unknown[0]!r} (known: {', '.join(KNOWN)})")
                    continue
                same = d.get("same-as")
                first = code.split("\n", 1)[0]
                if same is None and first in examples:
                    same = examples[first][0]
                if same is not None:
                    try:
                        with open(os.path.join(opt.source, same), encoding="utf-8") as f:
                            if f.read() != code:
                                fail(where, f"the block differs from {same}")
                    except OSError as e:
                        fail(where, f"same-as: {e}")
                if "excerpt" in d:
                    excerpts.append((where, d["excerpt"], code))
                    continue
                if "name" in d:
                    name = d["name"]
                    if name in named or os.path.basename(name) != name:
                        fail(where, f"name {name!r} is used twice or is not a plain file name")
                        continue
                    named[name] = code
                    with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                        f.write(code)
                exe = os.path.join(workdir, "sample")
                if "fragment" in d:
                    ok, err = compile_(workdir, PRELUDE + code, os.path.join(workdir, "sample.o"),
                                       include + ["-c", "-Wno-unused-function"], [])
                elif "fcgx" in d:
                    if not have_fcgx:
                        print(f"{where}: skipped: fcgiapp.h (libfcgi-dev) is not installed")
                        counts["skipped"] += 1
                        continue
                    ok, err = compile_(workdir, code, exe, ["-pthread"], ["-lfcgi"])
                else:
                    ok, err = compile_(workdir, code, exe, include, libs)
                if not ok:
                    fail(where, "the C block does not compile:\n" + err)
                    continue
                counts["compiled"] += 1
                if "fragment" in d:
                    continue
                counts["linked"] += 1
                if "run" in d:
                    try:
                        r = subprocess.run([exe], capture_output=True, text=True, cwd=workdir,
                                           timeout=RUN_TIMEOUT)
                        status = r.returncode
                        output = r.stdout + r.stderr
                    except subprocess.TimeoutExpired:
                        status, output = "a timeout", ""
                    if status != 0:
                        fail(where, f"the program ended with {status}:\n{output}")
                        continue
                    counts["run"] += 1
            for where, name, code in excerpts:
                whole = named.get(name)
                if whole is None:
                    fail(where, f"excerpt: no block named {name!r} on this page")
                elif "\n" + code not in "\n" + whole:
                    fail(where, f"the excerpt is not part of the block named {name!r}")
                else:
                    counts["excerpts"] += 1
    counts["verdicts"] = 0
    with tempfile.TemporaryDirectory(prefix="fcrest-verdicts-") as workdir:
        for what, kind, value, register, compiles in VERDICT_CASES:
            code = verdict_source(kind, value, register)
            ok, err = compile_(workdir, code, os.path.join(workdir, "v.o"), include + ["-c"], [])
            # A refusal counts only when it is for the verdict: the wrong enum returned, or a
            # function pointer of another kind.
            if not compiles and not ok and re.search(r"enum-conversion|incompatible", err):
                counts["verdicts"] += 1
            elif compiles and ok:
                counts["verdicts"] += 1
            elif compiles:
                fail(f"verdicts: {what}", "does not compile:\n" + err)
            elif ok:
                fail(f"verdicts: {what}", "compiles, but the compiler must refuse it")
            else:
                fail(f"verdicts: {what}", "refused for another reason:\n" + err)
    counts["options"] = check_options(opt.source, opt.build, fail)
    print(f"docs: {counts['compiled']} samples compiled ({counts['linked']} linked, "
          f"{counts['run']} run), {counts['excerpts']} excerpts found, {counts['skipped']} "
          f"skipped, {counts['verdicts']} verdict checks, {counts['options']} options checked, "
          f"{counts['failed']} failed")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
