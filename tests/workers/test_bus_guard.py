"""Admission on the sample bus: rate caps per source, unknown senders, counting."""

from __future__ import annotations

from ntpd_py.workers.bus_guard import BusGuard, TokenBucket

S = 1_000_000_000


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5.0)
    assert sum(bucket.take(0) for _ in range(20)) == 5
    assert sum(bucket.take(S) for _ in range(20)) == 5  # refilled to the burst, not beyond
    assert sum(bucket.take(S + S // 10) for _ in range(5)) == 1


def test_flooding_source_is_capped_and_counted() -> None:
    guard = BusGuard()
    guard.configure("ptp:/dev/ptp0", poll_log2=0)
    guard.configure("ntp:a", poll_log2=4)
    admitted = sum(guard.admit("ptp:/dev/ptp0", i * S // 10_000) for i in range(10_000))
    assert admitted < 40, admitted  # ~4/s plus the burst, out of 10 000 in one second
    assert guard.stats["ptp:/dev/ptp0"].dropped["rate-limited"] == 10_000 - admitted
    assert guard.admit("ntp:a", S)  # the other source is unaffected


def test_fast_phc_polling_is_allowed() -> None:
    guard = BusGuard()
    guard.configure("ptp:/dev/ptp1", poll_log2=-7)  # 128 samples/s
    admitted = sum(guard.admit("ptp:/dev/ptp1", i * S // 128) for i in range(1280))
    assert admitted == 1280


def test_unknown_senders_share_one_counter() -> None:
    guard = BusGuard()
    for i in range(100):
        assert not guard.admit(f"spoof{i}", 0)
    assert set(guard.stats) == {"(unknown)"}
    assert guard.totals() == {"unknown-sender": 100}
