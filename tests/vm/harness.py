"""Boot a Debian kernel under QEMU (TCG) on the host's own files and run one command in it.

The guest mounts the host root read-only over 9p, so it runs this repository's
virtualenv unchanged; an emulated igb NIC gives it a real, ticking kernel PHC
(/dev/ptp0) and an e1000e a second one (/dev/ptp1, useful for ioctl paths
only: its time is wrong). See shared/reference/qemu-phc-harness.md for why TCG
and not KVM. Everything the run writes lives in one run directory under
tests/vm/.cache/ (outside /tmp and /run, which are tmpfs in the guest), shared
writable with the guest at the same path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import selectors
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CACHE",
    "GuestResult",
    "HarnessUnavailable",
    "build_initramfs",
    "ensure_host_ready",
    "run_in_guest",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = HERE / ".cache"
QEMU = "qemu-system-x86_64"
QEMU_MIN_MAJOR = 8  # the igb device (a ticking PHC) appeared in QEMU 8
BOOT_MODULES = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "netfs", "fscache", "9pnet", "9pnet_virtio", "9p",
)
NIC_MODULES = ("igb", "e1000e")  # in this order: igb's PHC becomes /dev/ptp0
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
END_RE = re.compile(r"@@ntpd-py-vm end rc=(\d+)@@")
START_MARK = "@@ntpd-py-vm start@@"


class HarnessUnavailable(RuntimeError):
    """The host cannot run the guest (missing package, kernel, or permission)."""


@dataclass
class GuestResult:
    returncode: int  # the command's exit status; 124 on timeout, 125 if the guest died
    output: str  # what the command printed (the guest's console between the markers)
    console: str  # the whole serial console, boot messages included
    run_dir: Path
    wall_s: float
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)


def _qemu_major() -> int | None:
    exe = shutil.which(QEMU)
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"version (\d+)\.", out)
    return int(match.group(1)) if match else None


def _kernel() -> tuple[Path, Path]:
    """The newest /boot/vmlinuz-* whose modules include igb."""
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        mods = Path("/lib/modules") / version
        if next(mods.rglob("igb.ko*"), None) is not None:
            found.append((version, image, mods))
    if not found:
        raise HarnessUnavailable("no /boot/vmlinuz-* with igb in /lib/modules (linux-image-amd64)")
    found.sort(key=lambda item: [int(x) if x.isdigit() else 0 for x in re.split(r"[.-]", item[0])])
    return found[-1][1], found[-1][2]


def _missing() -> list[str]:
    missing = []
    major = _qemu_major()
    if major is None or major < QEMU_MIN_MAJOR:
        missing.append(f"{QEMU} >= {QEMU_MIN_MAJOR} (qemu-system-x86 from backports)")
    try:
        _kernel()
    except HarnessUnavailable as exc:
        missing.append(str(exc))
    if not Path("/bin/busybox").exists():
        missing.append("/bin/busybox (busybox-static)")
    if shutil.which("phc_ctl") is None and not Path("/usr/sbin/phc_ctl").exists():
        missing.append("phc_ctl (linuxptp)")
    return missing


def ensure_host_ready(install: bool = True) -> None:
    """Install the Debian packages the guest needs when missing (as root), else explain."""
    missing = _missing()
    if not missing:
        return
    if install and os.geteuid() == 0:
        # tests/run.sh owns the package list and the backports logic (mirror taken
        # from this machine's apt sources); NTPDPY_DEPS_ONLY stops it before pytest.
        env = dict(os.environ, NTPDPY_DEPS_ONLY="1")
        subprocess.run(["bash", str(REPO / "tests" / "run.sh")], env=env, check=False,
                       timeout=1800)
        missing = _missing()
    if missing:
        raise HarnessUnavailable("QEMU guest harness unavailable: missing " + "; ".join(missing)
                                 + " (run `sudo bash tests/run.sh` once to install them)")


def compile_for_guest() -> None:
    """Write this checkout's .pyc files on the host, where it is writable.

    The guest sees the checkout read-only, so without them every Python process
    there compiles ntpd-py from source first: about a second under TCG, counted
    in the daemon's start-up (PYTHONDONTWRITEBYTECODE, often set on these
    machines, keeps the host's own runs from writing them).
    """
    dirs = [str(REPO / d) for d in ("core", "ipc", "supervisor", "workers", "tests")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False,
                   stdout=subprocess.DEVNULL, timeout=300)


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data); symlinks carry their target as data."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def build_initramfs() -> tuple[Path, Path]:
    """Build (or reuse) the busybox initramfs for the newest kernel; return (kernel, initrd)."""
    kernel, mods = _kernel()
    init = (HERE / "init.sh").read_bytes()
    busybox = Path("/bin/busybox").read_bytes()
    modules = []
    for name in BOOT_MODULES:
        path = next(mods.rglob(f"{name}.ko"), None)
        if path is None:
            raise HarnessUnavailable(f"{name}.ko not found under {mods} (compressed modules?)")
        modules.append((name, path.read_bytes()))
    digest = hashlib.sha256(init + busybox + b"".join(d for _, d in modules)).hexdigest()[:16]
    initrd = CACHE / f"initrd-{mods.name}-{digest}.cpio"
    if not initrd.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        entries = [("bin", 0o40755, b""), ("bin/busybox", 0o100755, busybox),
                   ("init", 0o100755, init), ("modules", 0o40755, b""),
                   ("modules.order", 0o100644, "\n".join(n for n, _ in modules).encode())]
        entries += [(f"modules/{n}.ko", 0o100644, d) for n, d in modules]
        for stale in CACHE.glob(f"initrd-{mods.name}-*.cpio"):
            stale.unlink()
        tmp = initrd.with_suffix(".tmp")
        tmp.write_bytes(_cpio_newc(entries))
        tmp.rename(initrd)
    return kernel, initrd


def _guest_script(command: str, cwd: Path, run_dir: Path, nics: bool,
                  env: dict[str, str]) -> str:
    exports = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "NTPDPY_IN_VM": "1", "NTPDPY_VM_RUN_DIR": str(run_dir), **env}
    lines = ["set -u"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    if nics:
        lines += [f"modprobe {m} || echo 'ntpd-py-vm: modprobe {m} failed' >&2" for m in NIC_MODULES]
    lines += [f"cd {shlex.quote(str(cwd))} || exit 125", command]
    return "\n".join(lines) + "\n"


def _qemu_argv(kernel: Path, initrd: Path, run_dir: Path, nics: bool, memory_mb: int,
               kernel_args: str = "") -> list[str]:
    append = f"console=ttyS0 quiet loglevel=1 panic=-1 ntpdpy.run={run_dir} {kernel_args}"
    argv = [QEMU, "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "1", "-m", str(memory_mb),
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-monitor", "none",
            "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", append.strip(),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                       "multidevs=remap",
            "-virtfs", f"local,path={run_dir},mount_tag=rundir,security_model=none"]
    if nics:
        for i, model in enumerate(("igb", "e1000e"), start=1):
            argv += ["-netdev", f"user,id=n{i},restrict=on",
                     "-device", f"{model},netdev=n{i},romfile="]
    return argv


def _new_run_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("run-*"):  # keep the cache small: drop runs older than a day
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 86400:
                shutil.rmtree(old)
    return Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))


def run_in_guest(command: str, *, timeout_s: float = 600.0, cwd: Path | None = None,
                 nics: bool = True, memory_mb: int = 1024, env: dict[str, str] | None = None,
                 echo: bool = False, kernel_args: str = "",
                 qemu_args: tuple[str, ...] = ()) -> GuestResult:
    """Boot the guest, run ``command`` (a shell command line) in it, power off.

    The QEMU process is always killed by its PID on the way out (timeout,
    exception or normal end). With ``echo`` the command's output is copied to
    our stdout as it arrives. ``kernel_args`` are appended to the kernel
    command line (``ntpdpy.systemd=STAGE`` boots systemd instead of running
    ``command``: see init.sh and tests/deploy/). ``qemu_args`` are appended to
    QEMU's (more devices, e.g. a parallel port for a PPS test).
    """
    ensure_host_ready()
    compile_for_guest()
    kernel, initrd = build_initramfs()
    run_dir = _new_run_dir()
    cwd = (cwd or Path.cwd()).resolve()
    (run_dir / "guest.sh").write_text(_guest_script(command, cwd, run_dir, nics, env or {}))
    argv = [*_qemu_argv(kernel, initrd, run_dir, nics, memory_mb, kernel_args), *qemu_args]
    started = time.monotonic()
    console: list[str] = []
    timed_out = False
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        timed_out = _pump(proc, console, started + timeout_s, echo)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, 9)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    text = "".join(console).replace("\r\n", "\n")
    return _result(text, run_dir, time.monotonic() - started, timed_out)


def _pump(proc: subprocess.Popen[bytes], console: list[str], deadline: float,
          echo: bool) -> bool:
    """Copy the serial console until QEMU exits; True if the deadline passed first."""
    assert proc.stdout is not None
    inside = False
    buf = b""
    with selectors.DefaultSelector() as sel, contextlib.ExitStack() as finish:
        # whatever is left without a newline still belongs to the console
        finish.callback(lambda: console.append(buf.decode(errors="replace")) if buf else None)
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if not sel.select(timeout=min(left, 1.0)):
                if proc.poll() is not None:
                    return False
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return False
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace") + "\n"
                console.append(line)
                if START_MARK in line:
                    inside = True
                elif "@@ntpd-py-vm end" in line:
                    before = line[: line.find("@@ntpd-py-vm end")].rstrip("\r")
                    if echo and inside and before:  # output without a final newline
                        sys.stdout.write(before + "\n")
                    inside = False
                elif echo and inside:
                    sys.stdout.write(line.replace("\r\n", "\n"))
                    sys.stdout.flush()


def _result(text: str, run_dir: Path, wall_s: float, timed_out: bool) -> GuestResult:
    start = text.find(START_MARK)
    end = END_RE.search(text)
    body_from = text.find("\n", start) + 1 if start >= 0 else len(text)
    output = text[body_from : end.start() if end else len(text)]
    rc_file = run_dir / "rc"
    notes = []
    if timed_out:
        rc = 124
        notes.append(f"timed out after {wall_s:.0f} s; QEMU killed")
    elif rc_file.exists():
        rc = int(rc_file.read_text().strip() or "125")
    else:
        rc = 125
        notes.append("the guest stopped without reporting an exit status")
    return GuestResult(rc, output, text, run_dir, wall_s, timed_out, notes)
