"""`python -m tests.vm run [options] -- CMD ...`: run CMD as root in a fresh QEMU guest.

`python -m tests.vm e2e [--quick]`: the end-to-end scenario, ntpd-py against
chrony on the guest's own clock, with faults (see tests/vm/e2e.py).

The guest boots the host's Debian kernel with TCG, sees the host's files
read-only (so this repository's .venv works unchanged), has /dev/ptp0 (igb,
a real ticking PHC) and /dev/ptp1 (e1000e), and powers off when CMD ends.
The guest's output is printed and CMD's exit status is ours (124: timeout,
125: the guest died without one).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .harness import HarnessUnavailable, build_initramfs, ensure_host_ready, run_in_guest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["e2e"]:
        from .e2e import main as e2e_main

        return e2e_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tests.vm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="boot the guest and run a command in it")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    run.add_argument("--no-nics", action="store_true", help="no igb/e1000e (no /dev/ptp*)")
    run.add_argument("--memory", type=int, default=1024, help="guest MiB (default 1024)")
    run.add_argument("--console", action="store_true", help="print the whole serial console")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG ...]")
    sub.add_parser("build", help="install missing packages and build the initramfs")
    sub.add_parser("e2e", help="ntpd-py vs chrony on the guest clock, with faults (--help)")
    args = parser.parse_args(argv)
    try:
        if args.verb == "build":
            ensure_host_ready()
            print(build_initramfs()[1])
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command after --")
        result = run_in_guest(shlex.join(command), timeout_s=args.timeout,
                              nics=not args.no_nics, memory_mb=args.memory, echo=not args.console)
    except HarnessUnavailable as exc:
        print(f"tests.vm: {exc}", file=sys.stderr)
        return 3
    if args.console:
        sys.stdout.write(result.console)
    for note in result.notes:
        print(f"tests.vm: {note}", file=sys.stderr)
    print(f"tests.vm: guest exit status {result.returncode} after {result.wall_s:.1f} s wall",
          file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
