"""Each receiver's decoder accepts exactly the message types its match handles."""

from __future__ import annotations

from typing import get_args

from ntpd_py.supervisor.children import CHILD_ACCEPTS, ChildMessage
from ntpd_py.workers.clock_control import BUS_MESSAGES, BUS_TYPES, BusMessage, LinkMessage


def test_the_bus_decoder_and_the_bus_handler_agree() -> None:
    assert set(get_args(BusMessage)) == set(BUS_MESSAGES)
    assert {cls.TYPE for cls in get_args(BusMessage)} == BUS_TYPES


def test_the_supervisor_link_decoder_and_handler_agree() -> None:
    assert {cls.TYPE for cls in get_args(ChildMessage)} == CHILD_ACCEPTS


def test_clock_control_link_messages_are_what_the_supervisor_sends_it() -> None:
    assert {cls.__name__ for cls in get_args(LinkMessage)} == {"LogControl", "SourceSet",
                                                              "ProcessTable"}
