"""core/refclock_sock.py: the SOCK sample layout (checked with gcc) and every rejection."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ntpd_py.core.events import LeapIndicator
from ntpd_py.core.refclock_sock import (
    MAX_ABS_OFFSET_S,
    SOCK_MAGIC,
    SOCK_SAMPLE_SIZES,
    SockRejectReason,
    SockSampleRejected,
    encode_sock_sample,
    parse_sock_sample,
)

# The sample as feeders declare it (gpsd's and chrony's definitions agree on this shape),
# with time_t spelled as the C type the ABI gives it: `long` is 64-bit on x86_64 and 32-bit
# with -m32, exactly like glibc's __time_t and __suseconds_t.
_C_STRUCT = r"""
#include <stddef.h>
struct tv { long tv_sec; long tv_usec; };
struct sock_sample { struct tv tv; double offset; int pulse; int leap; int _pad; int magic; };
"""
_C_MAIN = r"""
#include <stdio.h>
#include <string.h>
int main(void) {
    struct sock_sample s;
    memset(&s, 0, sizeof s);
    s.tv.tv_sec = 1795000000; s.tv.tv_usec = 123456; s.offset = -0.25;
    s.pulse = 0; s.leap = 1; s.magic = 0x534f434b;
    fwrite(&s, sizeof s, 1, stdout);
    return 0;
}
"""


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot check the C layout")
    return gcc


def test_native_c_struct_bytes_parse(tmp_path: Path) -> None:
    gcc = _gcc()
    (tmp_path / "s.c").write_text(_C_STRUCT + _C_MAIN)
    subprocess.run([gcc, "-o", str(tmp_path / "s"), str(tmp_path / "s.c")], check=True,
                   timeout=60)
    data = subprocess.run([str(tmp_path / "s")], check=True, capture_output=True,
                          timeout=10).stdout
    assert len(data) == 40
    sample = parse_sock_sample(data)
    assert sample.time_ns == 1795000000 * 10**9 + 123456 * 1000
    assert sample.offset_s == -0.25
    assert sample.leap is LeapIndicator.INSERT and not sample.pulse and sample.size == 40
    assert encode_sock_sample(sample.time_ns, -0.25, leap=1) == data


@pytest.mark.parametrize(("flag", "size", "offsets"), [
    ("-m64", 40, (0, 16, 24, 28, 32, 36)),
    ("-m32", 32, (0, 8, 16, 20, 24, 28)),
])
def test_layouts_match_the_c_compiler(tmp_path: Path, flag: str, size: int,
                                      offsets: tuple[int, ...]) -> None:
    """Compile-only (no libc needed), so -m32 works without i386 libraries."""
    gcc = _gcc()
    names = ("tv", "offset", "pulse", "leap", "_pad", "magic")
    asserts = "".join(
        f"_Static_assert(offsetof(struct sock_sample, {n}) == {o}, \"{n}\");\n"
        for n, o in zip(names, offsets, strict=True))
    (tmp_path / "l.c").write_text(
        _C_STRUCT + f"_Static_assert(sizeof(struct sock_sample) == {size}, \"size\");\n"
        + asserts)
    result = subprocess.run([gcc, flag, "-c", "-o", str(tmp_path / "l.o"),
                             str(tmp_path / "l.c")], capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "static assert" not in result.stderr.lower():
        pytest.skip(f"gcc {flag} cannot compile here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    assert size in SOCK_SAMPLE_SIZES
    # our 32-bit layout puts the fields where the compiler does
    data = encode_sock_sample(7 * 10**9 + 5000, 1.5, leap=2, time_t_bits=32 if size == 32 else 64)
    assert len(data) == size
    magic_at = offsets[5]
    assert struct.unpack_from("=I", data, magic_at)[0] == SOCK_MAGIC
    assert struct.unpack_from("=d", data, offsets[1])[0] == 1.5
    assert struct.unpack_from("=i", data, offsets[3])[0] == 2


@given(st.integers(0, 2**31 - 1), st.integers(0, 999_999),
       st.floats(-MAX_ABS_OFFSET_S, MAX_ABS_OFFSET_S, allow_nan=False),
       st.booleans(), st.integers(0, 3), st.sampled_from([32, 64]))
def test_round_trip(sec: int, usec: int, offset: float, pulse: bool, leap: int,
                    bits: int) -> None:
    data = encode_sock_sample(sec * 10**9 + usec * 1000, offset, pulse=pulse, leap=leap,
                              time_t_bits=bits)
    sample = parse_sock_sample(data)
    assert (sample.time_ns, sample.offset_s, sample.pulse, int(sample.leap)) == (
        sec * 10**9 + usec * 1000, offset, pulse, leap)


@given(st.binary(max_size=100).filter(lambda b: len(b) not in SOCK_SAMPLE_SIZES))
def test_wrong_size_is_rejected(data: bytes) -> None:
    with pytest.raises(SockSampleRejected) as info:
        parse_sock_sample(data)
    assert info.value.reason is SockRejectReason.WRONG_SIZE


@given(st.binary(min_size=40, max_size=40) | st.binary(min_size=32, max_size=32))
def test_any_bytes_parse_or_are_rejected_with_a_reason(data: bytes) -> None:
    try:
        sample = parse_sock_sample(data)
    except SockSampleRejected as exc:
        assert exc.reason in SockRejectReason
    else:
        assert math.isfinite(sample.offset_s) and abs(sample.offset_s) <= MAX_ABS_OFFSET_S
        assert sample.time_ns >= 0


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"magic": 0x4B434F53}, SockRejectReason.WRONG_MAGIC),
    ({"offset_s": math.nan}, SockRejectReason.OFFSET_NOT_FINITE),
    ({"offset_s": math.inf}, SockRejectReason.OFFSET_NOT_FINITE),
    ({"offset_s": -1e300}, SockRejectReason.OFFSET_ABSURD),
    ({"offset_s": 2.0**31 + 1}, SockRejectReason.OFFSET_ABSURD),
    ({"time_ns": -10**9}, SockRejectReason.BAD_TIMEVAL),
    ({"leap": 4}, SockRejectReason.BAD_LEAP),
    ({"leap": -1}, SockRejectReason.BAD_LEAP),
])
def test_each_reason(kwargs: dict[str, float], reason: SockRejectReason) -> None:
    args: dict[str, float] = {"time_ns": 1_795_000_000 * 10**9, "offset_s": 0.001, **kwargs}
    data = encode_sock_sample(int(args.pop("time_ns")), args.pop("offset_s"),
                              **{k: int(v) for k, v in args.items()})  # type: ignore[arg-type]
    with pytest.raises(SockSampleRejected) as info:
        parse_sock_sample(data)
    assert info.value.reason is reason


def test_microseconds_out_of_range_are_rejected() -> None:
    data = struct.pack("=qqdiiiI", 5, 1_000_000, 0.0, 0, 0, 0, SOCK_MAGIC)
    with pytest.raises(SockSampleRejected) as info:
        parse_sock_sample(data)
    assert info.value.reason is SockRejectReason.BAD_TIMEVAL
