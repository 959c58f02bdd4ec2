"""Read the configuration file from disk and hand its text to the core loader.

This is the I/O half of configuration loading: it turns a missing, unreadable
or undecodable file into the same :class:`ConfigError` the core uses for bad
contents, so callers print one kind of error and exit 78.

`ntpctl`'s queries only need to know where the daemon is: they peek at the two
keys that say so (:func:`peek_control_paths`) without importing the
configuration models, and fall back to the full loader only to explain a
problem with those keys. Checking the whole file is `validate`'s job.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from ntpd_py.core.config_paths import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_RUNTIME_DIR,
    control_socket_path,
)
from ntpd_py.core.errors import ConfigError, ConfigIssue
from ntpd_py.core.exit_codes import EX_CONFIG

if TYPE_CHECKING:  # the pydantic models cost a quarter of a second to build: `ntpctl status`
    from ntpd_py.core.config import (
        Config,  # only peeks at two keys (peek_control_paths)
        NtsKeServerConfig,
    )

__all__ = [
    "EX_CONFIG",
    "MAX_CONFIG_BYTES",
    "MAX_SHOWN_ISSUES",
    "directory_warnings",
    "file_warnings",
    "load_config_file",
    "peek_control_paths",
    "read_nts_ke_files",
    "shown_issues",
]



# Real configurations are a few KiB; tomllib (pure Python) needs about 0.6 s per MiB here.
MAX_CONFIG_BYTES = 1024 * 1024
# A file with thousands of mistakes is reported by its first ones, not in megabytes.
MAX_SHOWN_ISSUES = 20
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def load_config_file(path: str | None) -> Config:
    """Load `path` (default `/etc/ntpd-py/ntp.toml`); raise ConfigError on any problem.

    Nothing else escapes: a file that makes the loader fail in an unforeseen way
    is reported as a ConfigError too, so that `validate` exits 78 and a reload
    keeps the running set instead of ending the daemon.
    """
    path = path or DEFAULT_CONFIG_PATH
    text = _read_text(path)
    try:
        return load_config_text(text, path)
    except ConfigError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot load: {type(exc).__name__}")]) from None
    except Exception as exc:  # a loader bug must not stop the daemon or print a traceback
        raise ConfigError(
            [ConfigIssue(path, "", f"cannot load (internal error, please report): "
                         f"{type(exc).__name__}: {str(exc)[:200]}")]
        ) from None


def load_config_text(text: str, filename: str) -> Config:
    """The core loader, imported on first use (its models are what ntpctl avoids)."""
    from ntpd_py.core.config_load import load_config_text as load

    return load(text, filename)


def peek_control_paths(path: str | None) -> tuple[str, str]:
    """(control socket, runtime directory) named by the file, without building the models.

    Only `[observability] observation-path` and `[daemon] runtime-dir` are looked
    at. When the file cannot be read, is not TOML, or those keys are not what the
    model accepts, the full loader runs to raise its ConfigError (the same message
    and exit 78 as `validate`); other mistakes in the file are left to `validate`.
    """
    import tomllib

    path = path or DEFAULT_CONFIG_PATH
    try:
        document = tomllib.loads(_read_text(path))
        observability = document.get("observability", {})
        daemon = document.get("daemon", {})
        observation = observability.get("observation-path")
        runtime_dir = daemon.get("runtime-dir", DEFAULT_RUNTIME_DIR)
        if (isinstance(observation, str | None) and isinstance(runtime_dir, str)
                and runtime_dir.startswith("/")):
            return control_socket_path(observation, runtime_dir), runtime_dir
    except (ConfigError, tomllib.TOMLDecodeError, RecursionError, AttributeError):
        pass  # explained by the full loader below
    config = load_config_file(path)  # raises the ConfigError that explains it
    return config.control_socket_path(), config.daemon.runtime_dir


def _read_text(path: str) -> str:
    raw = read_regular_file(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(path, "", "not valid UTF-8", line)]) from None


def read_regular_file(path: str) -> bytes:
    """At most MAX_CONFIG_BYTES + 1 bytes of a regular file; never blocks on a FIFO."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        hint = " (give another file with -c/--config)" if path == DEFAULT_CONFIG_PATH else ""
        raise ConfigError([ConfigIssue(path, "", f"no such file{hint}")]) from None
    except PermissionError:
        raise ConfigError([ConfigIssue(path, "", "permission denied reading the file")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot read: {exc.strerror}")]) from None
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            what = _KINDS.get(kind, "not a regular file")
            raise ConfigError([ConfigIssue(path, "", f"is {what}, expected a TOML file")])
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "", f"cannot read: {exc.strerror}")]) from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigIssue(path, "", "larger than 1 MiB; not a configuration file "
                                       "(only the first 1 MiB was read)")])
    return b"".join(chunks)


def shown_issues(exc: ConfigError) -> list[str]:
    """The rendered issues of `exc`, at most MAX_SHOWN_ISSUES plus a line saying how many more."""
    lines = [issue.render() for issue in exc.issues[:MAX_SHOWN_ISSUES]]
    if len(exc.issues) > MAX_SHOWN_ISSUES:
        lines.append(f"... and {len(exc.issues) - MAX_SHOWN_ISSUES} more errors")
    return lines


def file_warnings(path: str | None) -> list[str]:
    """Warnings about the file itself (as ntpd-rs: a world-writable config)."""
    path = path or DEFAULT_CONFIG_PATH
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & stat.S_IWOTH:
        return [f"{path} is writable by every user: anyone could change how the clock is set"]
    return []


def directory_warnings(config: Config) -> list[str]:
    """What `run` would find wrong with the existing directories (see supervisor/dirs.py)."""
    import grp
    import pwd

    from .dirs import is_shared_sticky, problem_with

    try:
        owner = (pwd.getpwnam(config.daemon.user).pw_uid, grp.getgrnam(config.daemon.group).gr_gid)
    except KeyError:
        owner = (os.geteuid(), os.getegid())
    if os.geteuid() != 0:
        owner = (os.geteuid(), os.getegid())  # without root there is no user switch
    notes = []
    for key, path in (("[daemon] runtime-dir", config.daemon.runtime_dir),
                      ("[daemon] state-dir", config.daemon.state_dir)):
        try:
            st = os.stat(path)
        except OSError:
            continue
        problem = problem_with(st, owner, 0o750)
        if problem is not None:
            notes.append(f'{key} = "{path}" {problem}: `ntpd-py run` will refuse to start '
                         "(exit 73)")
    control = config.control_socket_path()
    parent = os.path.dirname(control)
    try:
        st = os.stat(parent)
    except OSError:
        return notes
    if is_shared_sticky(st):
        notes.append(
            f'[observability] observation-path = "{control}" is in a shared directory '
            f"({parent}: writable by every user, sticky): another user can take that name "
            "before the daemon starts; ntpd-py leaves the directory as it is; prefer a path "
            "under [daemon] runtime-dir"
        )
    elif parent != config.daemon.runtime_dir:
        problem = problem_with(st, owner, 0o750)
        if problem is not None:
            notes.append(f'[observability] observation-path = "{control}": its directory '
                         f"{problem}: `ntpd-py run` will refuse to start (exit 73)")
    return notes


def _read_regular(path: str) -> bytes:
    # O_NONBLOCK and a regular-file check: a FIFO or a device named here must not
    # make validate (or the supervisor) hang or read forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def _certificates(key: str, path: str) -> tuple[bytes, list[Any]]:
    from cryptography import x509

    try:
        data = _read_regular(path)
        return data, x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as exc:
        raise ValueError(f'{key} = "{path}": no PEM certificate can be read ({exc})') from None


def read_nts_ke_files(index: int, server: NtsKeServerConfig) -> tuple[bytes, bytes]:
    """One `[[nts-ke-server]]`'s certificate chain and private key (PEM), checked: the
    chain holds certificates, the key loads unencrypted and matches the chain's first
    certificate. ValueError names the key and the file. Read by the supervisor (root)
    for its NTS-KE worker, which cannot read them itself, and by `validate`."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    chain_pem, chain = _certificates(f"nts-ke-server[{index}].certificate-chain-path",
                                     server.certificate_chain_path)
    key_name = f'nts-ke-server[{index}].private-key-path = "{server.private_key_path}"'
    try:
        key_pem = _read_regular(server.private_key_path)
        key = load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{key_name}: no unencrypted PEM private key can be read ({exc})"
                         ) from None
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError(f"{key_name}: does not match the first certificate of the chain")
    return chain_pem, key_pem


def nts_file_warnings(config: Config) -> list[str]:
    """What the NTS files named by the configuration lack: a CA file or certificate chain
    without a PEM certificate, a private key that does not load or does not match its
    certificate, a key-storage-path whose directory is missing. Read only by `validate`
    (as root it can read what the daemon's supervisor will)."""
    from ntpd_py.core.config import NtsPoolSourceConfig, NtsSourceConfig

    notes: list[str] = []
    for index, source in enumerate(config.source):
        if isinstance(source, NtsSourceConfig | NtsPoolSourceConfig) and (
            source.certificate_authority is not None
        ):
            try:
                _certificates(f"source[{index}].certificate-authority",
                              source.certificate_authority)
            except ValueError as exc:
                notes.append(str(exc))
    for index, server in enumerate(config.nts_ke_server):
        try:
            read_nts_ke_files(index, server)
        except ValueError as exc:
            notes.append(str(exc))
    if config.keyset is not None and config.keyset.key_storage_path is not None:
        parent = os.path.dirname(config.keyset.key_storage_path) or "/"
        if not os.path.isdir(parent):
            notes.append(f'[keyset] key-storage-path = "{config.keyset.key_storage_path}": the '
                         f"directory {parent} does not exist (the file is created, not its "
                         "directory)")
    return notes
