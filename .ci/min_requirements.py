"""Print the requirements of the lowest-versions test run (``make test-min``), one a line.

The base install and the extras named on the command line, as ``setup.cfg`` declares them, except the
numpy-side packages in ``LOWEST``, pinned to the lowest version declared (``name>=X`` becomes ``name==X``).
"""
from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

LOWEST = ("numpy", "scipy")  # what search/, data_cache/, bundle/ and contract/ compute with
_REQ = re.compile(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)")


def requirements(extras: list[str]) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    lines = cfg["options"]["install_requires"].split("\n")
    for extra in extras:
        if extra not in cfg["options.extras_require"]:
            sys.exit(f"error: setup.cfg declares no extra {extra!r}")
        lines += cfg["options.extras_require"][extra].split("\n")
    out = []
    for line in (ln.strip() for ln in lines):
        if not line:
            continue
        m = _REQ.fullmatch(line)
        if m is not None and m.group(1).lower() in LOWEST:
            line = f"{m.group(1)}=={m.group(2)}"
        if line not in out:
            out.append(line)
    missing = [name for name in LOWEST if not any(re.match(rf"{name}==", ln) for ln in out)]
    if missing:
        sys.exit(f"error: setup.cfg declares no minimum (name>=X) for {', '.join(missing)} in these extras")
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
