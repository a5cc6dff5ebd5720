"""What ``./run.sh`` and maintainers ask of the development tools.

    python -m devtools pg-bindir              the PostgreSQL server binaries' folder (exit 1: none)
    python -m devtools local-postgres start   create and start ./run.sh's private cluster
    python -m devtools local-postgres stop    stop it
    python -m devtools settings-docs          print the settings table of docs/configuration.md
    python -m devtools settings-docs --write  rewrite it and .env.example from the settings

``local-postgres start`` prints three lines for the shell: ``started`` or
``reused``, then ``DATABASE_URL`` and ``MIGRATION_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from devtools import settings_docs
from devtools.postgres import LocalCluster, SetupError, find_bindir, say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pg-bindir")
    local = commands.add_parser("local-postgres")
    local.add_argument("action", choices=["start", "stop"])
    settings_docs.add_arguments(commands.add_parser("settings-docs"))
    args = parser.parse_args(argv)
    if args.command == "settings-docs":
        return settings_docs.run(args)
    try:
        if args.command == "pg-bindir":
            print(find_bindir())
        elif args.action == "start":
            cluster = LocalCluster()
            started = cluster.start()
            print("started" if started else "reused", *cluster.urls(), sep="\n")
        else:
            LocalCluster().stop()
    except (RuntimeError, SetupError) as error:
        say(str(error))
        return 1
    except subprocess.CalledProcessError as error:
        output = (error.stderr or b"").decode(errors="replace").strip()
        say(f"{error.cmd[0]} failed (exit {error.returncode}){': ' + output if output else ''}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
