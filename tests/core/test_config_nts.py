"""NTS configuration: `mode = "nts"`/`"nts-pool"`, `[[nts-ke-server]]`, `[keyset]` and
`require-nts` pass the schema. `mode = "nts"`, `[keyset]` and `require-nts` run;
validate accepts the others (ntpd-rs's examples) with a warning, and `ntpd-py run`'s
daemon runs them all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ntpd_py.core.config_load import load_config_text

from tests.nts_helpers import make_pki

BIN = Path(sys.executable).parent

# The NTS configurations of ntpd-rs's repository and documentation, in substance (keys
# and values as ntpd-rs documents them; comments left out). {chain}/{key}/{ca} are
# replaced by real files.
NTPD_RS_NTS = {
    "nts.client.toml": """
[observability]
log-level = "info"
[[source]]
mode = "nts"
address = "localhost:4460"
certificate-authority = "{ca}"
[synchronization]
minimum-agreeing-sources = 1
single-step-panic-threshold = 10
""",
    "nts.server.toml": """
[observability]
log-level = "info"
[[source]]
mode = "pool"
address = "ntpd-rs.pool.ntp.org"
count = 4
[[server]]
listen = "0.0.0.0:123"
[[nts-ke-server]]
listen = "0.0.0.0:4460"
certificate-chain-path = "{chain}"
private-key-path = "{key}"
key-exchange-timeout-ms = 1000
""",
    "ntp.server.toml": """
[observability]
observation-path = "/var/run/ntpd-rs/observe"
[[source]]
mode = "pool"
address = "ntpd-rs.pool.ntp.org"
count = 4
[[server]]
listen = "[::]:123"
[keyset]
key-storage-path = "/var/lib/ntpd-rs/keyset"
""",
    "nts-source.toml": """
[[source]]
mode = "nts"
address = "nts.netnod.se"
[synchronization]
single-step-panic-threshold = 1800
startup-step-panic-threshold = { forward = "inf", backward = 86400 }
""",
    "nts-pool.toml": """
[[source]]
mode = "nts-pool"
address = "ntspool.example.org"
count = 4
[[server]]
listen = "[::]:123"
require-nts = "deny"
[keyset]
stale-key-count = 3
key-rotation-interval = 3600
""",
    "nts-ke-full.toml": """
[[source]]
mode = "server"
address = "ntp.example.org"
[[nts-ke-server]]
listen = "[::]:4460"
certificate-chain-path = "{chain}"
private-key-path = "{key}"
key-exchange-timeout-ms = 2000
concurrent-connections = 64
longlived-connections = 8
ntp-port = 11123
ntp-server = "time.example.org"
accept-ntp-versions = [4]
accepted-pool-authentication-tokens = []
""",
}


@pytest.fixture
def ntpd_rs_files(tmp_path: Path) -> dict[str, Path]:
    pki = make_pki(tmp_path / "pki")
    files = {}
    for name, text in NTPD_RS_NTS.items():
        path = tmp_path / name
        path.write_text(text.replace("{chain}", str(pki.server_cert)).replace("{key}", str(pki.server_key)).replace("{ca}", str(pki.ca_cert)))
        files[name] = path
    return files


def test_ntpd_rs_nts_source_example_is_run_by_the_daemon(
        ntpd_rs_files: dict[str, Path]) -> None:
    # mode = "nts" is wired (stage 2): the loader `ntpd-py run` uses accepts it
    for name in CLIENT_ONLY:
        config = load_config_text(ntpd_rs_files[name].read_text(), name)
        assert [source.mode for source in config.source] == ["nts"]
    config = load_config_text(ntpd_rs_files["nts-pool.toml"].read_text(), "nts-pool.toml")
    assert [source.mode for source in config.source] == ["nts-pool"]
    # [keyset], NTS on [[server]] and [[nts-ke-server]] are wired (stage 3)
    config = load_config_text(ntpd_rs_files["ntp.server.toml"].read_text(), "ntp.server.toml")
    assert config.keyset is not None and config.keyset.key_storage_path is not None
    for name in ("nts-ke-full.toml", "nts.server.toml"):
        config = load_config_text(ntpd_rs_files[name].read_text(), name)
        assert len(config.nts_ke_server) == 1


CLIENT_ONLY = ("nts-source.toml", "nts.client.toml")


@pytest.mark.parametrize("name", sorted(NTPD_RS_NTS))
def test_ntpd_rs_nts_examples_validate_without_a_warning(name: str,
                                                         ntpd_rs_files: dict[str, Path]) -> None:
    exe = shutil.which("ntpd-py", path=str(BIN)) or "ntpd-py"
    result = subprocess.run([exe, "validate", "-c", str(ntpd_rs_files[name])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK")
    assert "refuses" not in result.stderr
    load_config_text(ntpd_rs_files[name].read_text(), name)  # what `ntpd-py run` loads


def test_validate_json_of_an_nts_config(ntpd_rs_files: dict[str, Path]) -> None:
    exe = shutil.which("ntpd-py", path=str(BIN)) or "ntpd-py"
    result = subprocess.run([exe, "validate", "--json", "-c",
                             str(ntpd_rs_files["nts-pool.toml"])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"nts-pool"' in result.stdout and "refuses" not in result.stdout


def test_validate_checks_the_nts_files(tmp_path: Path, ntpd_rs_files: dict[str, Path]) -> None:
    exe = shutil.which("ntpd-py", path=str(BIN)) or "ntpd-py"
    good = subprocess.run([exe, "validate", "-c", str(ntpd_rs_files["nts-ke-full.toml"])],
                          capture_output=True, text=True, timeout=60)
    assert "private-key-path" not in good.stderr and "certificate" not in good.stderr
    first, second = make_pki(tmp_path / "a"), make_pki(tmp_path / "b")
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[[source]]\nmode = "nts"\naddress = "x"\ncertificate-authority = "{tmp_path}/none"\n'
        f'[[nts-ke-server]]\nlisten = "0.0.0.0:4460"\n'
        f'certificate-chain-path = "{first.server_cert}"\nprivate-key-path = "{second.server_key}"\n'
        f'[keyset]\nkey-storage-path = "{tmp_path}/missing/keys"\n')
    bad = subprocess.run([exe, "validate", "-c", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 0, bad.stderr
    assert "source[0].certificate-authority" in bad.stderr and "no PEM certificate" in bad.stderr
    assert "does not match the first certificate" in bad.stderr
    assert "does not exist" in bad.stderr


def test_validate_does_not_hang_on_a_fifo_named_as_a_certificate(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = tmp_path / "fifo.toml"
    config.write_text(f'[[source]]\nmode = "nts"\naddress = "x"\n'
                      f'certificate-authority = "{fifo}"\n')
    exe = shutil.which("ntpd-py", path=str(BIN)) or "ntpd-py"
    result = subprocess.run([exe, "validate", "-c", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and "not a regular file" in result.stderr
