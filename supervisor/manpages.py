"""Write the man pages ntpd-py(8), ntpctl(8) and ntp.toml(5) into a directory tree.

    python -m ntpd_py.supervisor.manpages --out DIR

writes DIR/man8/ntpd-py.8, DIR/man8/ntpctl.8 and DIR/man5/ntp.toml.5 (for
example DIR = /usr/local/share/man). The pages are generated from the code
(man_cli: the command-line definitions; man_toml: the configuration model), so
they are not kept in the repository: install.sh and the Debian package build
them at install time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

__all__ = ["PAGES", "main", "write_pages"]


def _ntpd_py() -> str:
    from .man_cli import render_ntpd_py

    return render_ntpd_py()


def _ntpctl() -> str:
    from .man_cli import render_ntpctl

    return render_ntpctl()


def _ntp_toml() -> str:
    from .man_toml import render

    return render()


# Path under the man root -> what renders it.
PAGES: dict[str, Callable[[], str]] = {
    "man8/ntpd-py.8": _ntpd_py,
    "man8/ntpctl.8": _ntpctl,
    "man5/ntp.toml.5": _ntp_toml,
}


def write_pages(out: str) -> list[str]:
    """Render every page into `out`; return the paths written."""
    written = []
    for relative, render in PAGES.items():
        path = os.path.join(out, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = render()
        with open(path, "w", encoding="ascii") as handle:  # roff escapes: plain ASCII
            handle.write(text)
        os.chmod(path, 0o644)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ntpd_py.supervisor.manpages",
        description="Write ntpd-py(8), ntpctl(8) and ntp.toml(5) under DIR/man8 and DIR/man5.")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="man root, e.g. /usr/local/share/man")
    args = parser.parse_args(argv)
    for path in write_pages(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
