"""Write docs/cli.md, every command's ``--help``, from the parser itself.

    python docs/make_cli_reference.py        # rewrites docs/cli.md

``tests/test_cli.py::test_cli_reference_names_every_option`` fails when a command or option
is missing from docs/cli.md, so a new flag is documented by rerunning this script.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# argparse wraps help at the terminal's width; fix it so the file does not depend on who ran it.
os.environ["COLUMNS"] = "100"

from longtail.cli import build_parser  # noqa: E402

HEADER = """# Command reference

Every `longtail` command's `--help`, written by `python docs/make_cli_reference.py` from the
parser (do not edit by hand). The README's *Command line* table is the overview.
"""


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def reference() -> str:
    parser = build_parser()
    parts = [HEADER, "## longtail\n", "```text\n" + parser.format_help().rstrip() + "\n```\n"]
    for name, sub in subcommands(parser).items():
        parts.append(f"## longtail {name}\n")
        parts.append("```text\n" + sub.format_help().rstrip() + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    out = Path(__file__).with_name("cli.md")
    out.write_text(reference())
    print(f"wrote {out}")
