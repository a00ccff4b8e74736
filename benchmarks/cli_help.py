"""Wall seconds of ``hesig --help`` and of every ``hesig CMD --help`` (median of 5 fresh processes).

Target: every one <= 0.3 s on 2 CPU cores: the CLI imports only hesig.core.defaults and click at
start; torch, TenSEAL and matplotlib load only when a command runs.

    python benchmarks/cli_help.py --out benchmarks/cli_help.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HESIG = str(Path(sys.executable).with_name("hesig"))  # the installed console script


def commands() -> list[list[str]]:
    """Every command path of the CLI, read from click itself."""
    import click

    from hesig.cli import cli

    found = [[]]

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name, command in sorted(group.commands.items()):
            found.append(prefix + [name])
            if isinstance(command, click.Group):
                walk(command, prefix + [name])

    walk(cli, [])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    for path in commands():
        seconds = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([HESIG, *path, "--help"], check=True, capture_output=True)
            seconds.append(time.perf_counter() - t0)
        rows[" ".join(["hesig", *path, "--help"])] = round(statistics.median(seconds), 3)
    result = {"median_seconds": rows, "max_seconds": max(rows.values()), "target_seconds": 0.3,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
