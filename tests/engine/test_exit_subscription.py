"""The engine's one subscription to the supervisor's exits, when it breaks: made again from
the last event seen, so that exits meanwhile are replayed, not looked for (no catch-up);
a new supervisor (another epoch) is caught up with."""
from __future__ import annotations

import os
import signal
import socket
import time

EXITING = 12


def _count_catch_ups(engine) -> list[int]:
    """Counts the engine's catch-ups from now on (a list that grows by one each)."""
    calls: list[int] = []
    real = engine._catch_up

    def counted() -> None:
        calls.append(1)
        real()
    engine._catch_up = counted
    return calls


def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _drop_subscription(engine) -> None:
    """Breaks the reader's connection, as a supervisor that dropped it would, and waits until
    the reader has subscribed again."""
    dropped = engine._subscription
    dropped.sock.shutdown(socket.SHUT_RDWR)
    _until(lambda: engine._subscription is not dropped, 10, "the resubscription")


def test_exits_during_resubscriptions_are_replayed(engine):
    engine.start(engine.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}}))
    catch_ups = _count_catch_ups(engine)
    cids = [engine.create({"Image": "busybox", "Cmd": ["sh", "-c", f"sleep 0.{n % 6 + 2}; exit {n}"],
                           "HostConfig": {"NetworkMode": "none"}}) for n in range(EXITING)]
    for cid in cids:
        engine.start(cid)

    def exited() -> list[str]:
        return [cid for cid in cids if engine.store.get(cid)["state"].get("Status") == "exited"]
    drops = 0
    deadline = time.monotonic() + 20
    while len(exited()) < EXITING and time.monotonic() < deadline:
        _drop_subscription(engine)  # over and over while the containers exit
        drops += 1
    assert len(exited()) == EXITING, f"exits lost: {set(cids) - set(exited())}"
    assert [engine.store.get(cid)["state"]["ExitCode"] for cid in cids] == list(range(EXITING))
    assert drops > 5 and catch_ups == []  # every exit came as an event, none was looked for


def test_a_new_supervisor_is_caught_up_with(engine, roots):
    _, exec_root = roots
    engine.start(engine.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}}))
    catch_ups = _count_catch_ups(engine)
    first = int(open(os.path.join(exec_root, "supervisor.pid")).read())
    epoch = engine._subscription.epoch
    os.kill(first, signal.SIGKILL)
    _until(lambda: engine._subscription.epoch != epoch, 20, "a subscription to the new supervisor")
    _until(lambda: catch_ups, 10, "the catch-up")
    assert int(open(os.path.join(exec_root, "supervisor.pid")).read()) != first
    cid = engine.create({"Image": "busybox", "Cmd": ["sh", "-c", "exit 7"], "HostConfig": {"NetworkMode": "none"}})
    engine.start(cid)
    _until(lambda: engine.store.get(cid)["state"].get("Status") == "exited", 10, "the exit")
    assert engine.store.get(cid)["state"]["ExitCode"] == 7


def test_a_resubscription_broken_before_its_replay_is_read_replays_again(engine, roots):
    """The events replayed to a resubscription count as seen only once read: one that breaks
    first resubscribes from where the last one was."""
    from sampan.supervisor.client import Client
    _, exec_root = roots
    first = engine.create({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})
    engine.start(first)
    engine.wait(first)  # (its exit is before the subscription)
    client = Client(exec_root)
    with client.subscribe() as seen:
        cid = engine.create({"Image": "busybox", "Cmd": ["sh", "-c", "exit 3"], "HostConfig": {"NetworkMode": "none"}})
        engine.start(cid)
        _until(lambda: engine.store.get(cid)["state"].get("Status") == "exited", 10, "the exit")
        after = seen.last_seq  # nothing read from this one: the exit is after it
    with client.subscribe(after=after, epoch=seen.epoch) as unread:
        assert not unread.gap and unread.seq > after and unread.last_seq == after
    with client.subscribe(after=unread.last_seq, epoch=unread.epoch) as again:
        event = next(again)
        assert event["container"] == cid and event["exit_code"] == 3 and again.last_seq == event["seq"]
