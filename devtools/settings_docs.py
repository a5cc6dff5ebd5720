"""The documents generated from the settings table: docs/configuration.md's table and .env.example.

    python -m devtools settings-docs                 print the settings table (Markdown)
    python -m devtools settings-docs --env-example   print .env.example
    python -m devtools settings-docs --write         rewrite both files in place

Each setting is declared once, in ``todo_server/config/table.py``; the tests
fail when either generated file no longer matches it.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

from todo_server.config import SETTINGS, Setting

#: Where the generated table lives, and between which markers, relative to the project folder.
CONFIGURATION_PAGE = Path("docs") / "configuration.md"
ENV_EXAMPLE = Path(".env.example")
TABLE_START = (
    "<!-- The settings table is generated from SETTINGS in todo_server/config/table.py:"
    " edit it there, then run `python -m devtools settings-docs --write`. -->"
)
TABLE_END = "<!-- End of the generated settings table. -->"
ENV_EXAMPLE_HEADER = """\
# Copy to .env for local use; `./run.sh` (serve, setup, migrate) loads it (variables already set
# in the environment win). Plain KEY=VALUE lines. Every setting the server reads is listed here.
# Generated from SETTINGS in todo_server/config/table.py: edit there, then run
# `python -m devtools settings-docs --write`.
"""


def shown_default(setting: Setting) -> str:
    """The table's default column for a setting (Markdown)."""
    return setting.shown_default or f"`{setting.default}`"


def settings_table() -> str:
    """The configuration table, one row per setting."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {shown_default(s)} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"


def with_settings_table(page: str) -> str:
    """The page's text with the table between its markers replaced by ``settings_table()``."""
    start = page.index(TABLE_START) + len(TABLE_START)
    end = page.index(TABLE_END, start)
    return f"{page[:start]}\n\n{settings_table()}\n{page[end:]}"


def env_example() -> str:
    """The text of .env.example: each setting's help as a comment, then its line.

    A setting with a plain default is written with it, so a copied file changes
    nothing; the others are written commented out, with an example value.
    """
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n")]
    for setting in SETTINGS:
        lines.append("")
        comment = setting.help
        if setting.shown_default is not None:
            comment += f" (default: {setting.shown_default.removeprefix('(').removesuffix(')')})"
        lines += textwrap.wrap(
            _plain(comment),
            width=100,
            initial_indent="# ",
            subsequent_indent="# ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        if setting.default is not None and setting.shown_default is None:
            lines.append(f"{setting.name}={setting.default}")
        else:
            lines.append(f"# {setting.name}={setting.example or setting.default or ''}")
    return "\n".join(lines) + "\n"


def _plain(markdown: str) -> str:
    """Markdown as plain text for a comment: links become their words, code loses its ticks."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown).replace("`", "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``settings-docs`` command's options."""
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--env-example", action="store_true", help="print .env.example")
    what.add_argument(
        "--write",
        metavar="FOLDER",
        nargs="?",
        const=".",
        help=(
            f"rewrite FOLDER/{CONFIGURATION_PAGE}'s table and FOLDER/{ENV_EXAMPLE}"
            " (default: the current folder)"
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Print the table (or .env.example), or rewrite both generated files."""
    if args.write is not None:
        page = Path(args.write) / CONFIGURATION_PAGE
        page.write_text(with_settings_table(page.read_text()))
        (Path(args.write) / ENV_EXAMPLE).write_text(env_example())
    elif args.env_example:
        print(env_example(), end="")
    else:
        print(settings_table(), end="")
    return 0
