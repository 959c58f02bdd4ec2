"""Sans-IO pool manager: choosing, replacing and re-resolving pool peers."""

from __future__ import annotations

import pytest
from ntpd_py.core.ntp_pool import (
    PeerFailure,
    PoolManager,
    PoolTimer,
    Resolve,
    StartPeer,
    StopPeer,
)

S = 1_000_000_000
A, B, C, D, E = ((f"192.0.2.{i}", 123) for i in range(1, 6))


def started(actions: list) -> list:
    return [a.address for a in actions if isinstance(a, StartPeer)]


def test_start_asks_for_resolution_and_fills_up_to_count() -> None:
    pool = PoolManager(count=3)
    assert pool.start(0) == [Resolve()]
    actions = pool.handle_resolved([A, B, C, D], 0)
    assert started(actions) == [A, B, C]
    assert pool.active == (A, B, C)
    assert pool.next_deadline_ns is None


def test_ignore_list_duplicates_and_canonical_forms() -> None:
    pool = PoolManager(count=4, ignore=["192.0.2.2"])
    actions = pool.handle_resolved([A, B, A, ("2001:db8:0:0::1", 123), ("2001:db8::1", 123)], 0)
    assert started(actions) == [A, ("2001:db8::1", 123)]
    # Short of peers: a resolution is scheduled with back-off.
    assert actions[-1] == PoolTimer(60 * S)
    assert pool.handle_timer(30 * S) == [PoolTimer(60 * S)]
    assert pool.handle_timer(60 * S) == [Resolve()]
    actions = pool.handle_resolved([A], 60 * S)
    assert actions == [PoolTimer(180 * S)]  # backoff doubled


@pytest.mark.parametrize("reason", [PeerFailure.UNREACHABLE, PeerFailure.FALSETICKER,
                                    PeerFailure.DENIED])
def test_failed_peer_is_replaced_from_spares(reason: PeerFailure) -> None:
    pool = PoolManager(count=2)
    pool.handle_resolved([A, B, C], 0)
    actions = pool.peer_failed(A, reason, 10 * S)
    assert actions == [StopPeer(A, reason), StartPeer(C)]
    assert pool.active == (B, C)


def test_without_spares_a_failure_triggers_resolution_and_the_bad_address_is_avoided() -> None:
    pool = PoolManager(count=2, retry_after_ns=3600 * S)
    pool.handle_resolved([A, B], 0)
    assert pool.peer_failed(A, PeerFailure.UNREACHABLE, 10 * S) == [
        StopPeer(A, PeerFailure.UNREACHABLE), Resolve()]
    # The resolver returns the same addresses: A is held off, so nothing starts.
    assert started(pool.handle_resolved([A, B], 11 * S)) == []
    # After the hold-off A may be used again.
    assert started(pool.handle_resolved([A, B], 3611 * S)) == [A]


def test_denied_addresses_are_never_used_again() -> None:
    pool = PoolManager(count=1)
    pool.handle_resolved([A], 0)
    pool.peer_failed(A, PeerFailure.DENIED, 1)
    assert started(pool.handle_resolved([A, B], 10**6 * S)) == [B]


def test_unknown_peer_failure_is_ignored() -> None:
    pool = PoolManager(count=1)
    pool.handle_resolved([A], 0)
    assert pool.peer_failed(E, PeerFailure.UNREACHABLE, 1) == []


def test_resolution_failure_backs_off() -> None:
    pool = PoolManager(count=1, resolve_backoff_min_ns=10 * S, resolve_backoff_max_ns=30 * S)
    assert pool.handle_resolve_failed(0) == [PoolTimer(10 * S)]
    assert pool.handle_resolve_failed(10 * S) == [PoolTimer(30 * S)]
    assert pool.handle_resolve_failed(30 * S) == [PoolTimer(60 * S)]  # capped at 30 s
    assert started(pool.handle_resolved([A], 60 * S)) == [A]
    assert pool.next_deadline_ns is None


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PoolManager(count=0)
