from datetime import UTC, datetime

from switchboard.models import EventKind
from workflows._events import EventLog

AT = datetime(2026, 11, 27, tzinfo=UTC)


def _fill(log: EventLog, n: int) -> None:
    for i in range(n):
        log.append(EventKind.SUBAGENT_STEP, f"step {i}", at=AT, subagent=1)


def test_offsets_are_dense_and_ordered() -> None:
    log = EventLog()
    _fill(log, 5)
    page = log.page(0, 100, final=False)
    assert [e.offset for e in page.events] == [0, 1, 2, 3, 4]
    assert page.next_offset == 5
    assert not page.final


def test_reading_from_the_middle_and_paging() -> None:
    log = EventLog()
    _fill(log, 10)
    first = log.page(3, 4, final=False)
    assert [e.offset for e in first.events] == [3, 4, 5, 6]
    second = log.page(first.next_offset, 4, final=False)
    assert [e.offset for e in second.events] == [7, 8, 9]
    empty = log.page(second.next_offset, 4, final=False)
    assert empty.events == [] and empty.next_offset == 10


def test_reading_past_the_end_waits_at_the_end() -> None:
    log = EventLog()
    _fill(log, 2)
    page = log.page(7, 10, final=False)
    assert page.events == [] and page.next_offset == 7


def test_final_only_once_the_reader_has_everything() -> None:
    log = EventLog()
    _fill(log, 3)
    assert not log.page(0, 2, final=True).final
    assert log.page(2, 2, final=True).final


def test_retention_drops_oldest_and_reports_a_gap() -> None:
    log = EventLog(limit=5)
    _fill(log, 12)
    assert log.first_offset == 7
    page = log.page(2, 100, final=False)
    gap, *rest = page.events
    assert gap.kind is EventKind.GAP
    assert gap.data == {"dropped": 5, "resume_offset": 7}
    assert [e.offset for e in rest] == [7, 8, 9, 10, 11]
    assert page.next_offset == 12


def test_gap_counts_against_the_page_limit() -> None:
    log = EventLog(limit=5)
    _fill(log, 12)
    page = log.page(0, 3, final=False)
    assert [e.kind for e in page.events] == [
        EventKind.GAP,
        EventKind.SUBAGENT_STEP,
        EventKind.SUBAGENT_STEP,
    ]
    assert page.next_offset == 9
