"""A failed batch's offsets are never committed (``take_events`` acknowledges a batch in a
``finally``, even when the agent's body raised)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faust.types.tuples import ConsumerMessage, Message

from aurora_streams.agents.normalize import withhold_acks


@dataclass
class _Consumer:
    """Records what reaches the consumer's ack bookkeeping (the offsets it would commit)."""

    acked: list[int] = field(default_factory=list)

    def ack(self, message: Message) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass
class _Event:
    message: Message


def _events(offsets: range) -> list[Any]:
    out = []
    for offset in offsets:
        m = ConsumerMessage("raw", 0, offset, 0.0, 0, None, b"k", b"v", None)
        m.incref()
        out.append(_Event(m))
    return out


def test_a_normal_batch_reaches_the_consumer() -> None:
    consumer = _Consumer()
    for event in _events(range(3)):
        event.message.ack(consumer)
    assert consumer.acked == [0, 1, 2]


def test_a_withheld_batch_never_reaches_the_consumer() -> None:
    consumer = _Consumer()
    failed = _events(range(3, 6))
    withhold_acks(failed)
    for event in failed:  # what take_events' finally does
        assert event.message.ack(consumer) is False
    assert consumer.acked == []
