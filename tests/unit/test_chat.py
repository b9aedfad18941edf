"""The chat service's pure parts: user id parsing, errors, and the in-process waiters."""

from __future__ import annotations

import threading
import uuid

import pytest

from profilesync.chat import InvalidUserIdError, ProfileNotReadyError, UnknownUserError
from profilesync.chat.model import parse_user_id
from profilesync.chat.waiters import WaiterRegistry, Wake
from profilesync.errors import ProfileSyncError

USER = uuid.UUID("7d3c6b1e-2f4a-4c1e-9a58-0b6f3f1d2e4c")


@pytest.mark.parametrize("value", [USER, str(USER), USER.hex, str(USER).upper()])
def test_user_ids_are_accepted_as_uuid_or_string(value: object) -> None:
    assert parse_user_id(value) == USER


@pytest.mark.parametrize("value", ["", "nope", "7d3c6b1e", 42, None, b"7d3c6b1e2f4a4c1e9a580b6f3f1d2e4c"])
def test_anything_else_is_an_invalid_user_id(value: object) -> None:
    with pytest.raises(InvalidUserIdError, match=r"^Not a user id \(expected a UUID\): "):
        parse_user_id(value)


def test_errors_are_profilesync_errors_with_their_docstring_as_message() -> None:
    assert issubclass(InvalidUserIdError, ValueError)
    for cls in (InvalidUserIdError, UnknownUserError, ProfileNotReadyError):
        assert issubclass(cls, ProfileSyncError)
    assert str(UnknownUserError("abc")) == "No such user (absent from auth.users, or deleted): abc"
    assert str(ProfileNotReadyError()) == "The user's profile was not created in time (retry later)"


def test_a_waiter_times_out_when_nothing_wakes_it() -> None:
    with WaiterRegistry().watch() as waiter:
        assert waiter.wait(0) is Wake.TIMEOUT
        assert waiter.wait(-1) is Wake.TIMEOUT


def test_ready_wins_over_recheck_and_each_is_consumed_once() -> None:
    with WaiterRegistry().watch() as waiter:
        waiter.wake(ready=False)
        waiter.wake(ready=True)
        assert waiter.wait(0) is Wake.READY  # a hint: the caller checks, and may wait again
        assert waiter.wait(0) is Wake.RECHECK
        assert waiter.wait(0) is Wake.TIMEOUT


def test_recheck_is_consumed_by_the_wait_that_returns_it() -> None:
    with WaiterRegistry().watch() as waiter:
        waiter.wake(ready=False)
        assert waiter.wait(0) is Wake.RECHECK
        assert waiter.wait(0) is Wake.TIMEOUT


def test_the_registry_wakes_only_the_waiter_of_a_token() -> None:
    registry = WaiterRegistry()
    with registry.watch() as first, registry.watch() as second:
        old, new, other = first.new_token(), first.new_token(), second.new_token()
        assert len(registry) == 2
        assert len({old, new, other, USER}) == 4  # random tokens, nothing derived from a user id
        assert registry.notify(old) and registry.notify(new)
        assert not registry.notify(uuid.uuid4())
        assert (first.wait(0), first.wait(0), second.wait(0)) == (Wake.READY, Wake.TIMEOUT, Wake.TIMEOUT)
        assert registry.notify(other)
        assert second.wait(0) is Wake.READY
    assert len(registry) == 0
    assert not registry.notify(old)  # a finished wait's tokens route nowhere


def test_notify_all_and_recheck_all_reach_every_current_waiter() -> None:
    registry = WaiterRegistry()
    with registry.watch() as first, registry.watch() as second:
        assert registry.notify_all() == 2
        assert (first.wait(0), second.wait(0)) == (Wake.READY, Wake.READY)
        assert registry.recheck_all() == 2
        assert (first.wait(0), second.wait(0)) == (Wake.RECHECK, Wake.RECHECK)
    assert registry.recheck_all() == 0
    assert registry.notify_all() == 0


def test_a_blocked_waiter_is_woken_from_another_thread() -> None:
    registry = WaiterRegistry()
    results: list[Wake] = []
    tokens: list[uuid.UUID] = []
    watching = threading.Event()

    def wait() -> None:
        with registry.watch() as waiter:
            tokens.append(waiter.new_token())
            watching.set()
            results.append(waiter.wait(30))

    thread = threading.Thread(target=wait)
    thread.start()
    assert watching.wait(5)
    registry.notify(tokens[0])
    thread.join(5)
    assert results == [Wake.READY]
