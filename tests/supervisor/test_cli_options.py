"""`ntpctl` and `ntpd-py` command lines: -c before or after the command, --json, --version.

Also that `ntpctl status` stays fast: against a stand-in daemon (a ZeroMQ REP
socket answering a real CtlReply frame) it prints what the pydantic path
prints, and imports neither pydantic, the configuration models, rich nor typer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from ntpd_py.supervisor import cli, ctl
from ntpd_py.supervisor.ctl_format import reply_json, text_output

from tests.ipc.test_wire import sample_reply

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
HEAVY = ("pydantic", "pydantic_core", "rich", "typer", "click", "ntpd_py.core.config",
         "ntpd_py.core.config_load", "ntpd_py.ipc.messages", "ntpd_py.ipc.framing",
         "importlib.metadata")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def idle_config(tmp_path: Path) -> Path:
    """A configuration whose daemon is not running (its runtime directory is empty)."""
    path = tmp_path / "ntp.toml"
    path.write_text(f'[daemon]\nruntime-dir = "{tmp_path}/run"\nstate-dir = "{tmp_path}"\n')
    return path


@pytest.mark.parametrize("command", ["status", "sources", "workers"])
def test_config_before_or_after_the_command(idle_config: Path, command: str) -> None:
    socket = f"{idle_config.parent}/run/observe"
    for args in (("-c", str(idle_config), command), (command, "-c", str(idle_config)),
                 ("--config", str(idle_config), command), (command, f"--config={idle_config}")):
        result = run("ntpctl", *args)
        assert result.returncode == 69, (args, result.stderr)
        assert result.stderr == f"ntpctl: ntpd-py is not running (no control socket at {socket})\n"


def test_json_is_a_flag_before_or_after(idle_config: Path) -> None:
    for args in (("--json", "-c", str(idle_config), "status"),
                 ("status", "--json", "-c", str(idle_config)),
                 ("-c", str(idle_config), "status", "--json")):
        result = run("ntpctl", *args)
        document = json.loads(result.stdout)
        assert result.returncode == 69 and document["exit_code"] == 69, args
        assert document["command"] == "status"
    # in the help: a flag without a value
    for parser in (ctl.build_parser(), cli.build_parser()):
        (action,) = [a for a in parser._actions if "--json" in a.option_strings]
        assert action.nargs == 0
    help_text = run("ntpctl", "status", "--help").stdout
    assert "--json " in help_text and "--json JSON" not in help_text


def test_validate_takes_config_on_either_side() -> None:
    example = str(EXAMPLES / "kvm-guest.toml")
    outputs = set()
    for program in ("ntpd-py", "ntpctl"):
        for args in (("-c", example, "validate"), ("validate", "-c", example)):
            result = run(program, *args)
            assert result.returncode == 0, result.stderr
            outputs.add(result.stdout)
    assert len(outputs) == 1 and next(iter(outputs)).startswith(f"configuration OK: {example}")
    result = run("ntpd-py", "--json", "-c", example, "validate")
    assert json.loads(result.stdout)["ok"] is True


def test_config_errors_still_exit_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\nruntime-dir = "relative"\n')
    result = run("ntpctl", "-c", str(bad), "status")
    assert result.returncode == 78
    assert "daemon.runtime-dir" in result.stderr and "absolute" in result.stderr
    bad.write_text("[daemon\n")
    assert run("ntpctl", "status", "-c", str(bad)).returncode == 78
    assert run("ntpctl", "status", "-c", str(tmp_path / "missing.toml")).returncode == 78
    assert run("ntpd-py", "-c", str(bad), "validate").returncode == 78


def test_version_on_both_programs() -> None:
    expected = version("ntpd-py")
    assert run("ntpd-py", "--version").stdout == f"ntpd-py {expected}\n"
    result = run("ntpctl", "--version")
    assert result.returncode == 0 and result.stdout == f"ntpctl (ntpd-py) {expected}\n"


def test_usage_errors_exit_2() -> None:
    assert run("ntpctl").returncode == 2
    assert run("ntpctl", "bogus").returncode == 2
    assert run("ntpctl", "status", "--bogus").returncode == 2
    assert run("ntpd-py", "run", "--clock", "real").returncode == 2
    assert run("ntpd-py", "-c", "x.toml", "simulate", "x").returncode == 2


def test_parsers_describe_every_command() -> None:
    from ntpd_py.supervisor.cli_args import subcommands

    for parser, names in ((ctl.build_parser(), list(ctl.COMMANDS)),
                          (cli.build_parser(), ["validate", "run", "simulate"])):
        assert list(subcommands(parser)) == names
        for name, command in subcommands(parser).items():
            assert command.description, name
            assert all(a.help for a in command._actions), name


# -- the fast path, against a stand-in daemon ---------------------------------------------


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Path]:
    """A config whose control socket is a REP socket answering one real CtlReply per request."""
    import zmq
    from ntpd_py.ipc.framing import encode

    runtime = tmp_path / "run"
    runtime.mkdir()
    config = tmp_path / "ntp.toml"
    config.write_text(f'[daemon]\nruntime-dir = "{runtime}"\nstate-dir = "{tmp_path}"\n')
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(f"ipc://{runtime}/observe")
    frame = encode(sample_reply())
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if rep.poll(50):
                rep.recv()
                rep.send(frame)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield config
    finally:
        stop.set()
        thread.join(5)
        rep.close()
        ctx.term()


@pytest.mark.parametrize("command", ["status", "sources", "workers"])
def test_output_is_the_pydantic_paths(stand_in: Path, command: str) -> None:
    reply = sample_reply()
    text = run("ntpctl", command, "-c", str(stand_in))
    assert text.returncode == 0, text.stderr
    assert text.stdout == text_output(reply, command)
    as_json = run("ntpctl", "-c", str(stand_in), "--json", command)
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout == json.dumps(reply_json(reply, command)) + "\n"
    if command == "status":
        assert "Clock: synchronized (simulated backend)" in text.stdout


def test_status_imports_nothing_heavy(stand_in: Path) -> None:
    code = ("import json, sys\n"
            "def report():\n"
            "    sys.stderr.write('MODULES ' + json.dumps(sorted(sys.modules)) + '\\n')\n"
            "import atexit; atexit.register(report)\n"
            f"sys.argv = ['ntpctl', '-c', {str(stand_in)!r}, 'status']\n"
            "from ntpd_py.supervisor.ctl import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Clock: synchronized")
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    loaded = set(json.loads(line.removeprefix("MODULES ")))
    assert "zmq" in loaded and "msgpack" in loaded  # it did talk to the stand-in
    heavy = sorted(m for m in loaded if m in HEAVY or m.split(".")[0] in HEAVY)
    assert heavy == [], f"ntpctl status imported {heavy}"


def test_an_invalid_file_is_reported_when_the_daemon_cannot_be_asked(tmp_path: Path) -> None:
    config = tmp_path / "ntp.toml"
    config.write_text(f'[daemon]\nruntime-dir = "{tmp_path}/run"\nclock = 1\n')
    result = run("ntpctl", "-c", str(config), "status")
    assert result.returncode == 78 and "daemon.clock" in result.stderr
    result = run("ntpctl", "-c", str(config), "--json", "sources")
    assert result.returncode == 78 and json.loads(result.stdout)["exit_code"] == 78


def test_a_running_daemon_is_asked_whatever_the_file_became(stand_in: Path) -> None:
    # the daemon runs with the configuration it read at start or at its last reload
    stand_in.write_text(stand_in.read_text() + "[bogus]\n")
    result = run("ntpctl", "-c", str(stand_in), "status")
    assert result.returncode == 0 and result.stdout == text_output(sample_reply(), "status")
