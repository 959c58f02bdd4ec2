"""`ntpd-py run`: logging set-up, then the supervisor or the single-process mode."""

from __future__ import annotations

from ntpd_py.core.errors import ConfigError
from ntpd_py.core.exit_codes import EX_CONFIG
from ntpd_py.plumbing.logutil import set_level_override, setup_logging

from .config_file import load_config_file, shown_issues

__all__ = ["run_daemon"]


def run_daemon(
    config_path: str, clock: str | None, single_process: bool, log_level: str | None
) -> int:
    try:
        config = load_config_file(config_path)
    except ConfigError as exc:
        log = setup_logging(log_level or "info", "ntpd-py")
        for line in shown_issues(exc):
            log.error("%s", line)
        return EX_CONFIG
    obs = config.observability
    set_level_override(log_level)  # inherited by every child; kept across reloads
    log = setup_logging(obs.log_level, "supervisor", obs.log_path)
    # What `validate` warns about (keys ntpd-py ignores, sources that can never
    # agree) is also said where a daemon started as is will show it: its log.
    for warning in config.warnings():
        log.warning("%s: %s", config_path, warning)
    # The one start-up prologue of both modes: directories, identity, devices,
    # sockets; a configuration or start-up error ends here with its exit code.
    from .setup import StartupError, prepare

    try:
        setup = prepare(config_path, clock, log, single_process=single_process)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("%s", issue.render())
        return EX_CONFIG
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    if single_process:
        from .single import run_single_process

        return run_single_process(setup, log)
    from .main import Supervisor

    return Supervisor(setup, config_path, log).run()
