"""Rate limits shared between processes (RateLimiter.outgoing / stored / incoming), with the exchange done by
hand here as the database does it: each series replaced by its latest total; the store itself is under test in
tests/storage/test_usage_contract.py and the whole path in tests/api/test_rate_limits.py."""

from __future__ import annotations

import pytest

from inhouse.records import RateUsage
from inhouse.services.rate_limits import SERIES_IDLE_S, Limit, RateLimiter, RateLimitExceeded


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def exchange(db: dict[str, RateUsage], limiter: RateLimiter) -> None:
    mine = limiter.outgoing()
    for row in mine:
        db[row.series] = row
    limiter.stored(mine)
    limiter.incoming(sorted(db.values(), key=lambda r: r.series))


KEY = (Limit("key_1", 6),)


def test_what_one_process_takes_the_others_take_too() -> None:
    clock, db = Clock(), {}
    a, b = RateLimiter(clock, process="a"), RateLimiter(clock, process="b")
    exchange(db, a)
    exchange(db, b)
    for _ in range(4):
        a.take("requests", KEY, 1)
    exchange(db, a)
    exchange(db, b)
    b.take("requests", KEY, 2)  # 6 - 4 through a
    with pytest.raises(RateLimitExceeded):
        b.take("requests", KEY, 1)
    # A settled estimate gives back through the exchange too (tokens estimated 5, used 1).
    tokens = (Limit("key_1", 10),)
    a.take("tokens", tokens, 5)
    exchange(db, a)
    exchange(db, b)
    with pytest.raises(RateLimitExceeded):
        b.take("tokens", tokens, 6)
    a.settle("tokens", tokens, 5, 1)
    exchange(db, a)
    exchange(db, b)
    b.take("tokens", tokens, 9)


def test_first_exchange_only_notes_old_totals_and_own_series_are_never_taken_twice() -> None:
    clock, db = Clock(), {}
    a = RateLimiter(clock, process="a")
    for _ in range(5):
        a.take("requests", KEY, 1)
    exchange(db, a)
    exchange(db, a)  # its own series come back from the store: not taken again
    a.take("requests", KEY, 1)
    late = RateLimiter(clock, process="late")
    exchange(db, late)  # started after a's five: notes them, does not take them all at once
    late.take("requests", KEY, 6)


def test_an_idle_series_ends_and_a_new_one_starts() -> None:
    clock, db = Clock(), {}
    a, b = RateLimiter(clock, process="a"), RateLimiter(clock, process="b")
    exchange(db, a)
    exchange(db, b)
    a.take("requests", KEY, 3)
    exchange(db, a)
    clock.t += SERIES_IDLE_S + 1
    assert a.outgoing() == []  # stored and idle: ended
    a.take("requests", KEY, 2)
    sent = a.outgoing()
    assert [(r.series, r.used) for r in sent] == [("a-1", 2.0)]  # a new series, from zero
    exchange(db, a)
    exchange(db, b)
    # b had not exchanged since a's first series: it takes both now (3 late, which errs on the safe side, + 2).
    b.take("requests", KEY, 1)
    with pytest.raises(RateLimitExceeded):
        b.take("requests", KEY, 1)
