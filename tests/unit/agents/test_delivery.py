"""Recording how far a table partition's changelog is applied to its local store.

The broker's answer (the changelog's end) is stubbed here; the real path is covered by
``tests/integration/test_checkpoint.py`` (persisted offsets after a run) and the owner-change
soak (``bench/soak.py --churn-every-min``), which found the race tested below.
"""

from __future__ import annotations

from typing import Any

from faust.types import TP

from aurora_streams.agents.delivery import TableWriter, persist_changelog_offsets


class _Store:
    def __init__(self) -> None:
        self.persisted: dict[TP, int] = {}

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


class _Table:
    def __init__(self) -> None:
        self.data = _Store()


class _Ends:
    """The changelog ends as the broker answers them; ``during`` runs while it is asked
    (what the event loop may do meanwhile: a rebalance)."""

    def __init__(self, ends: dict[tuple[str, int], int], during: Any = None) -> None:
        self.ends, self.during = ends, during

    def end_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if self.during is not None:
            self.during()
        return {tp: self.ends[tp] for tp in partitions}


def _writer(table: _Table, partition: int) -> TableWriter:
    writer = TableWriter(None, partition)
    writer.touched[table] = "app-device_state-changelog"
    return writer


async def test_the_changelogs_end_is_recorded_for_every_written_partition() -> None:
    table = _Table()
    ends = _Ends({("app-device_state-changelog", 0): 120, ("app-device_state-changelog", 2): 7})
    await persist_changelog_offsets(ends, [_writer(table, 0), _writer(table, 2)], lambda: True)  # type: ignore[arg-type]
    assert table.data.persisted == {
        TP("app-device_state-changelog", 0): 119,
        TP("app-device_state-changelog", 2): 6,
    }


async def test_nothing_is_recorded_when_a_rebalance_began_while_the_ends_were_asked() -> None:
    # The partition's next owner may have appended records this store lacks by the time the
    # broker answers: recording that end made recovery skip them when the partition came back.
    owned = [True]
    table = _Table()
    ends = _Ends({("app-device_state-changelog", 0): 120}, during=lambda: owned.__setitem__(0, False))
    await persist_changelog_offsets(ends, [_writer(table, 0)], lambda: owned[0])  # type: ignore[arg-type]
    assert table.data.persisted == {}
