#!/usr/bin/env python3
"""The API reference documents the whole public API, and the rule that it must has teeth.

1. Doxygen runs over the public headers with the generated Doxyfile and gives no warning.
2. Every fcr_ symbol the built library exports is a documented function of the reference
   (its XML index) and is listed on the HTML page of functions.
3. A copy of the headers with one undocumented function added to fcrest/core.h is refused:
   Doxygen fails with a warning that names the function.

Usage: check_reference.py --doxygen DOXYGEN --doxyfile BUILD/docs/Doxyfile --include SRC/include
                          [--library libfcrest.so|libfcrest.a]... [--nm NM]
(--library may be given once per library: libfcrest and libfcrest-pg.)
Prints one summary line; exits non-zero on any failure.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

PROBE = "fcr_undocumented_probe"


def run_doxygen(doxygen, doxyfile, overrides):
    """Runs Doxygen with the Doxyfile and `overrides` (later settings win) read from stdin.
    Returns (exit status, warning lines)."""
    with open(doxyfile, encoding="utf-8") as f:
        config = f.read()
    config += "\n" + "".join(f"{k} = {v}\n" for k, v in overrides.items())
    r = subprocess.run([doxygen, "-"], input=config, capture_output=True, text=True)
    lines = [l for l in (r.stderr + r.stdout).splitlines() if l.strip()]
    return r.returncode, lines


def quoted(path):
    return '"' + path + '"'


def exported_symbols(library, nm):
    """The fcr_ names the library defines and exports (version suffixes removed)."""
    shared = ".so" in os.path.basename(library)
    cmd = [nm, "-D" if shared else "-g", "--defined-only", library]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        name = parts[-1].split("@")[0]
        if re.match(r"fcr_[a-z]", name):
            names.add(name)
    return names


def declared_functions(include):
    """Fallback without a library: the fcr_ functions declared in the headers."""
    names = set()
    for path in glob.glob(os.path.join(include, "**", "*.h"), recursive=True):
        with open(path, encoding="utf-8") as f:
            text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
        names.update(re.findall(r"\b(fcr_[a-z][a-z0-9_]*)\s*\(", text))
    return {n for n in names if not n.startswith("fcr__")}


def has_text(elem):
    return elem is not None and "".join(elem.itertext()).strip() != ""


def documented_members(xml_dir):
    """(kind, name) of every member of the reference that carries documentation."""
    members = set()
    for path in glob.glob(os.path.join(xml_dir, "*.xml")):
        if os.path.basename(path) == "index.xml":
            continue
        root = ET.parse(path).getroot()
        for comp in root.iter("compounddef"):
            kind = comp.get("kind")
            if kind in ("struct", "union") and (
                has_text(comp.find("briefdescription"))
                or has_text(comp.find("detaileddescription"))
            ):
                members.add((kind, comp.findtext("compoundname")))
        for md in root.iter("memberdef"):
            if has_text(md.find("briefdescription")) or has_text(md.find("detaileddescription")):
                members.add((md.get("kind"), md.findtext("name")))
            for ev in md.iter("enumvalue"):
                if has_text(ev.find("briefdescription")) or has_text(
                    ev.find("detaileddescription")
                ):
                    members.add(("enumvalue", ev.findtext("name")))
    return members


def html_function_list(html_dir):
    """Names listed on the HTML pages of functions (globals_func*.html)."""
    names = set()
    for path in glob.glob(os.path.join(html_dir, "globals_func*.html")):
        with open(path, encoding="utf-8") as f:
            names.update(re.findall(r">(fcr_[a-z][a-z0-9_]*)\(\)", f.read()))
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--doxygen", required=True)
    ap.add_argument("--doxyfile", required=True)
    ap.add_argument("--include", required=True)
    ap.add_argument("--library", action="append", default=[])
    ap.add_argument("--nm", default="nm")
    args = ap.parse_args()
    failures = []

    with tempfile.TemporaryDirectory(prefix="fcrest-reference-") as tmp:
        # 1. The real headers: no warning at all.
        out = os.path.join(tmp, "out")
        rc, warnings = run_doxygen(
            args.doxygen,
            args.doxyfile,
            {"OUTPUT_DIRECTORY": quoted(out), "GENERATE_XML": "YES"},
        )
        if rc != 0 or warnings:
            failures.append(f"doxygen exited with {rc} and {len(warnings)} warning(s):")
            failures.extend("  " + w for w in warnings)

        # 2. Every exported symbol is documented and listed.
        if args.library:
            symbols = set()
            for lib in args.library:
                symbols |= exported_symbols(lib, args.nm)
            source = " and ".join(os.path.basename(lib) for lib in args.library)
        else:
            symbols = declared_functions(args.include)
            source = "the headers"
        if not symbols:
            failures.append(f"no fcr_ symbol found in {source}")
        members = documented_members(os.path.join(out, "xml"))
        functions = {name for kind, name in members if kind == "function"}
        listed = html_function_list(os.path.join(out, "html"))
        for name in sorted(symbols - functions):
            failures.append(f"{name}: exported by {source} but not a documented function")
        for name in sorted(symbols - listed):
            failures.append(f"{name}: exported by {source} but not on the HTML function list")

        # 3. An undocumented declaration is refused, with a warning that names it.
        inc = os.path.join(tmp, "include")
        shutil.copytree(args.include, inc)
        with open(os.path.join(inc, "fcrest", "core.h"), "a", encoding="utf-8") as f:
            f.write(f"\nint {PROBE}(void);\n")
        rc, warnings = run_doxygen(
            args.doxygen,
            args.doxyfile,
            {
                "INPUT": quoted(inc),
                "STRIP_FROM_PATH": quoted(inc),
                "STRIP_FROM_INC_PATH": quoted(inc),
                "INCLUDE_PATH": quoted(inc),
                "OUTPUT_DIRECTORY": quoted(os.path.join(tmp, "probe")),
            },
        )
        named = [w for w in warnings if PROBE in w]
        if rc == 0:
            failures.append(f"an undocumented {PROBE}() in fcrest/core.h was accepted")
        if not named:
            failures.append(f"no doxygen warning names {PROBE}: {warnings}")
        others = [w for w in warnings if PROBE not in w]
        if others:
            failures.append("the probe run warned about more than the probe:")
            failures.extend("  " + w for w in others)

    if failures:
        print("\n".join(failures))
        print(f"reference: FAILED ({len(failures)} problem(s))")
        return 1
    print(
        f"reference: {len(symbols)} exported functions and {len(members)} symbols documented"
        f", undocumented probe refused"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
