"""core/pps_abi.py against the kernel's <linux/pps.h>: numbers, sizes, offsets, round trips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core import pps_abi
from ntpd_py.core.pps_abi import PpsFetch, PpsParams, PpsTimeInvalid

HEADER = Path("/usr/include/linux/pps.h")

_C_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/pps.h>
#define N(x) printf(#x " %lld\n", (long long)(x))
#define O(s, f) printf("offsetof:" #s ":" #f " %zu\n", offsetof(struct s, f))
#define S(s) printf("sizeof:" #s " %zu\n", sizeof(struct s))
int main(void) {
    N(PPS_GETPARAMS); N(PPS_SETPARAMS); N(PPS_GETCAP); N(PPS_FETCH);
    N(PPS_API_VERS_1); N(PPS_TIME_INVALID); N(PPS_CAPTUREASSERT); N(PPS_CAPTURECLEAR);
    N(PPS_CAPTUREBOTH); N(PPS_OFFSETASSERT); N(PPS_OFFSETCLEAR); N(PPS_CANWAIT);
    N(PPS_TSFMT_TSPEC);
    S(pps_ktime); S(pps_kinfo); S(pps_kparams); S(pps_fdata);
    O(pps_ktime, sec); O(pps_ktime, nsec); O(pps_ktime, flags);
    O(pps_kinfo, assert_sequence); O(pps_kinfo, clear_sequence); O(pps_kinfo, assert_tu);
    O(pps_kinfo, clear_tu); O(pps_kinfo, current_mode);
    O(pps_kparams, api_version); O(pps_kparams, mode); O(pps_kparams, assert_off_tu);
    O(pps_kparams, clear_off_tu);
    O(pps_fdata, info); O(pps_fdata, timeout);
    return 0;
}
"""


@pytest.fixture(scope="module")
def kernel_abi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot compile the ABI check against <linux/pps.h>")
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is missing (Debian package linux-libc-dev)")
    work = tmp_path_factory.mktemp("ppsabi")
    (work / "abi.c").write_text(_C_PROGRAM)
    subprocess.run([gcc, "-O0", "-o", str(work / "abi"), str(work / "abi.c")], check=True,
                   timeout=60)
    out = subprocess.run([str(work / "abi")], check=True, capture_output=True, text=True,
                         timeout=10).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("name", [
    "PPS_GETPARAMS", "PPS_SETPARAMS", "PPS_GETCAP", "PPS_FETCH", "PPS_API_VERS_1",
    "PPS_TIME_INVALID", "PPS_CAPTUREASSERT", "PPS_CAPTURECLEAR", "PPS_CAPTUREBOTH",
    "PPS_OFFSETASSERT", "PPS_OFFSETCLEAR", "PPS_CANWAIT", "PPS_TSFMT_TSPEC"])
def test_constants_match_the_header(kernel_abi: dict[str, int], name: str) -> None:
    assert getattr(pps_abi, name) == kernel_abi[name]


@pytest.mark.parametrize(("struct_name", "ours"), [
    ("pps_ktime", pps_abi.KTIME_SIZE), ("pps_kinfo", pps_abi.KINFO_SIZE),
    ("pps_kparams", pps_abi.KPARAMS_SIZE), ("pps_fdata", pps_abi.FDATA_SIZE)])
def test_sizes_match_the_header(kernel_abi: dict[str, int], struct_name: str, ours: int) -> None:
    assert ours == kernel_abi[f"sizeof:{struct_name}"]


def test_every_offset_matches_the_header(kernel_abi: dict[str, int]) -> None:
    checked = 0
    for struct_name, fields in pps_abi.OFFSETS.items():
        for field, offset in fields.items():
            assert offset == kernel_abi[f"offsetof:{struct_name}:{field}"], (struct_name, field)
            checked += 1
    assert checked == sum(1 for key in kernel_abi if key.startswith("offsetof:"))


def test_fetch_buffer_carries_the_timeout_where_the_kernel_reads_it() -> None:
    buf = pps_abi.encode_fetch(1_500_000_000)
    assert len(buf) == pps_abi.FDATA_SIZE
    timeout = buf[pps_abi.OFFSETS["pps_fdata"]["timeout"]:]
    assert int.from_bytes(timeout[0:8], "little", signed=True) == 1
    assert int.from_bytes(timeout[8:12], "little", signed=True) == 500_000_000
    assert int.from_bytes(timeout[12:16], "little") == 0
    forever = pps_abi.encode_fetch(None)
    flags = forever[pps_abi.OFFSETS["pps_fdata"]["timeout"] + 12]
    assert flags & pps_abi.PPS_TIME_INVALID


def _kinfo_bytes(a_seq: int, c_seq: int, a_sec: int, a_nsec: int, c_sec: int, c_nsec: int,
                 mode: int) -> bytearray:
    buf = bytearray(pps_abi.FDATA_SIZE)
    off = pps_abi.OFFSETS["pps_kinfo"]
    buf[0:4] = a_seq.to_bytes(4, "little")
    buf[4:8] = c_seq.to_bytes(4, "little")
    for base, sec, nsec in ((off["assert_tu"], a_sec, a_nsec), (off["clear_tu"], c_sec, c_nsec)):
        buf[base:base + 8] = sec.to_bytes(8, "little", signed=True)
        buf[base + 8:base + 12] = nsec.to_bytes(4, "little", signed=True)
    buf[off["current_mode"]:off["current_mode"] + 4] = mode.to_bytes(4, "little", signed=True)
    return buf


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**40),
       st.integers(0, 10**9 - 1), st.integers(0, 2**40), st.integers(0, 10**9 - 1),
       st.integers(0, 0x3FFF))
def test_decode_fetch_reads_the_kernels_fields(a_seq: int, c_seq: int, a_sec: int, a_nsec: int,
                                               c_sec: int, c_nsec: int, mode: int) -> None:
    got = pps_abi.decode_fetch(_kinfo_bytes(a_seq, c_seq, a_sec, a_nsec, c_sec, c_nsec, mode))
    assert got == PpsFetch(a_seq, c_seq, a_sec * 10**9 + a_nsec, c_sec * 10**9 + c_nsec, mode)


@given(st.integers(10**9, 2**31 - 1))
def test_decode_fetch_refuses_a_garbled_nanosecond_field(nsec: int) -> None:
    with pytest.raises(PpsTimeInvalid):
        pps_abi.decode_fetch(_kinfo_bytes(1, 0, 5, nsec, 0, 0, 1))


@given(st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1),
       st.integers(-10**12, 10**12), st.integers(-10**12, 10**12))
def test_params_round_trip(api: int, mode: int, a_off: int, c_off: int) -> None:
    params = PpsParams(api, mode, a_off, c_off)
    buf = pps_abi.encode_params(params)
    assert len(buf) == pps_abi.KPARAMS_SIZE
    assert pps_abi.decode_params(buf) == params


def test_getcap_decodes_an_int() -> None:
    caps = pps_abi.PPS_CAPTUREBOTH | pps_abi.PPS_CANWAIT | pps_abi.PPS_TSFMT_TSPEC
    assert pps_abi.decode_getcap(caps.to_bytes(pps_abi.GETCAP_SIZE, "little")) == caps
