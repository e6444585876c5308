#!/usr/bin/env python3
"""README.md's C code says what the code does: the tutorial block is examples/tutorial.c
byte for byte, and every other C block compiles against the public headers."""
import os
import re
import subprocess
import sys
import tempfile

src = sys.argv[1]
cc = sys.argv[2] if len(sys.argv) > 2 else "cc"
readme = open(os.path.join(src, "README.md"), encoding="utf-8").read()
blocks = re.findall(r"```c\n(.*?)```", readme, re.S)
failures = 0
tutorial = open(os.path.join(src, "examples", "tutorial.c"), encoding="utf-8").read()
if tutorial not in blocks:
    print("README.md: the tutorial block differs from examples/tutorial.c")
    failures += 1
flags = subprocess.run(["pkg-config", "--cflags", "jansson", "libpcre2-8"],
                       capture_output=True, text=True).stdout.split()
for i, code in enumerate(blocks):
    with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as f:
        f.write(code)
    r = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                        "-fsyntax-only", "-I", os.path.join(src, "include"), *flags, f.name],
                       capture_output=True, text=True)
    os.unlink(f.name)
    if r.returncode != 0:
        print(f"README.md: C block {i + 1} does not compile:\n{r.stderr}")
        failures += 1
print(f"readme: {len(blocks) + 1 - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
