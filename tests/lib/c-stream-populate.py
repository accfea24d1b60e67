#!/usr/bin/env python3
"""Fills a running C xenstored (Debian's 4.17, under bench/shim/fake-xen.c) with the content
of the fixture engine/tests/fixtures/c-xenstored-4.17-live-update.stream, then asks it for a
live update; called by tests/lib/make-c-stream.sh, which starts the daemon and collects the
stream. engine/tests/migration_c_stream.rs asserts exactly what is done here: change both
together.

Usage: c-stream-populate.py RUNDIR SOCKET LIVE_UPDATE_BINARY
       c-stream-populate.py --check-ours RUNDIR SOCKET
         after C exec()ed our daemon instead (make-c-stream.sh --then-ours): checks that it
         serves the store as C left it, the guests' rings and half requests included

Speaks the wire protocol itself (dom0 over the socket, guests over simulated rings, as
daemon/README.md "The simulated-guest convention" describes) so that it can leave half a
request unsent and can write values with any bytes. Exits non-zero with the reason on any
unexpected reply.
"""

import mmap
import os
import socket
import struct
import sys
import time

# Message types (xs_wire.h numbering).
CONTROL, DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH = 0, 1, 2, 3, 4, 5
INTRODUCE, WRITE, MKDIR, SET_PERMS, WATCH_EVENT, ERROR = 8, 11, 12, 14, 15, 16
IS_DOMAIN_INTRODUCED, SET_TARGET = 17, 19

HEADER = struct.Struct("<IIII")
# Ring page offsets (xs_wire.h's struct xenstore_domain_interface).
REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD = 2048, 2052, 2056, 2060
RING_SIZE = 1024


def fail(message):
    print(f"c-stream-populate: {message}", file=sys.stderr)
    sys.exit(1)


def payload(*parts):
    """Strings and bytes joined with NULs, each string NUL-terminated (bytes are taken as
    they are: a value is the last part and has no NUL of its own)."""
    out = b""
    for part in parts:
        out += part if isinstance(part, bytes) else part.encode() + b"\0"
    return out


class SocketClient:
    """dom0 on the store's socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(10)
        self.request_id = 100

    def receive_message(self):
        header = self._receive_exactly(HEADER.size)
        kind, request_id, transaction, length = HEADER.unpack(header)
        return kind, request_id, self._receive_exactly(length)

    def _receive_exactly(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                fail("the store closed the socket")
            data += chunk
        return data

    def request(self, kind, body):
        self.request_id += 1
        self.sock.sendall(HEADER.pack(kind, self.request_id, 0, len(body)) + body)
        while True:
            got, request_id, reply = self.receive_message()
            if got == WATCH_EVENT:
                continue
            if got == ERROR:
                fail(f"request {kind} {body!r}: error {reply!r}")
            if request_id != self.request_id:
                fail(f"request {kind}: reply to request {request_id}")
            return reply


class Guest:
    """A simulated guest: its ring file, FIFOs and event-channel port."""

    def __init__(self, rundir, domid, port, fresh=True):
        """`fresh`: make a zeroed ring file (before introduction); else attach to the ring
        as it is (after the live update)."""
        self.domid = domid
        self.port = port
        self.directory = os.path.join(rundir, "domains", str(domid))
        os.makedirs(self.directory, exist_ok=True)
        ring = os.path.join(self.directory, "ring")
        if fresh:
            with open(ring + ".new", "wb") as page:
                page.write(bytes(4096))
            os.rename(ring + ".new", ring)
        for fifo in ("to-server", "to-guest"):
            path = os.path.join(self.directory, fifo)
            if not os.path.exists(path):
                os.mkfifo(path, 0o600)
        self.to_server = os.open(os.path.join(self.directory, "to-server"), os.O_RDWR | os.O_NONBLOCK)
        self.file = open(ring, "r+b")
        self.page = mmap.mmap(self.file.fileno(), 4096)
        self.request_id = 1

    def _word(self, offset):
        return struct.unpack_from("<I", self.page, offset)[0]

    def _set_word(self, offset, value):
        struct.pack_into("<I", self.page, offset, value & 0xFFFFFFFF)

    def notify(self):
        os.write(self.to_server, struct.pack("<I", self.port))

    def send_bytes(self, data):
        """Puts bytes into the request ring (there is room: the store keeps up) and notifies."""
        produced = self._word(REQ_PROD)
        for index, byte in enumerate(data):
            self.page[(produced + index) % RING_SIZE] = byte
        self._set_word(REQ_PROD, produced + len(data))
        self.notify()

    def _take(self, count, deadline):
        data = b""
        while len(data) < count:
            consumed, produced = self._word(RSP_CONS), self._word(RSP_PROD)
            if consumed == produced:
                if time.monotonic() > deadline:
                    fail(f"domain {self.domid}: no reply from the store")
                time.sleep(0.005)
                continue
            data += bytes([self.page[RING_SIZE + consumed % RING_SIZE]])
            self._set_word(RSP_CONS, consumed + 1)
        self.notify()
        return data

    def receive_message(self):
        deadline = time.monotonic() + 10
        kind, request_id, _, length = HEADER.unpack(self._take(HEADER.size, deadline))
        return kind, request_id, self._take(length, deadline)

    def request(self, kind, body):
        self.request_id += 1
        self.send_bytes(HEADER.pack(kind, self.request_id, 0, len(body)) + body)
        while True:
            got, request_id, reply = self.receive_message()
            if got == WATCH_EVENT:
                continue
            if got == ERROR:
                fail(f"domain {self.domid}: request {kind} {body!r}: error {reply!r}")
            return reply


def expect(what, got, wanted):
    if got != wanted:
        fail(f"after the live update, {what}: {got!r}, not {wanted!r}")


def check_ours(rundir, socket_path):
    """After C exec()ed our daemon with -U: the store, as C left it, is served by ours."""
    dom0 = SocketClient(socket_path)
    expect("/local/domain/1/name", dom0.request(READ, payload("/local/domain/1/name")), b"guest-1-39")
    expect(
        "the binary value",
        dom0.request(READ, payload("/local/domain/1/data/deep/deeper/deepest")),
        b"bin\x00\x01\xfe\xffary",
    )
    expect("/local/domain", dom0.request(DIRECTORY, payload("/local/domain")), b"1\x002\x003\x00")
    expect("/vm's permissions", dom0.request(GET_PERMS, payload("/vm")), b"n0\x00r1\x00r4\x00")
    # Guest 2 completes the READ it had half sent to C: ours answers it (EACCES: /vm/uuid
    # is dom0's), with the request id C had received.
    guest2 = Guest(rundir, 2, 12, fresh=False)
    guest2.send_bytes(b"uuid\0")
    expect("guest 2's completed request", guest2.receive_message(), (ERROR, 77, b"EACCES\0"))
    # Guest 1 reads its ring again: the events C had put there, then the rest of the one C
    # had partly sent (from ours), then the reply to a new request.
    guest1 = Guest(rundir, 1, 11, fresh=False)
    events = 0
    guest1.request_id += 1
    body = payload("/local/domain/1/name")
    guest1.send_bytes(HEADER.pack(READ, guest1.request_id, 0, len(body)) + body)
    while True:
        kind, request_id, reply = guest1.receive_message()
        if kind != WATCH_EVENT:
            break
        expect("guest 1's queued event", reply, b"name\0own-name\0")
        events += 1
    expect("guest 1's reply", (kind, request_id, reply), (READ, guest1.request_id, b"guest-1-39"))
    if events < 2:
        fail(f"after the live update, guest 1 found {events} queued events")
    # Its watch goes on firing.
    dom0.request(WRITE, payload("/local/domain/1/name", b"after-update"))
    expect("guest 1's new event", guest1.receive_message()[2], b"name\0own-name\0")
    # Guest 3 still acts for guest 2.
    guest3 = Guest(rundir, 3, 13, fresh=False)
    expect("guest 3 reading its target's node", guest3.request(READ, payload("/local/domain/2/name")), b"renamed-by-2")
    expect("check", dom0.request(CONTROL, payload("check")), b"OK\0")
    print(f"c-stream-populate: our daemon serves C's store (guest 1 found {events} queued events)")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check-ours":
        check_ours(*sys.argv[2:])
        return
    if len(sys.argv) != 4:
        fail("usage: c-stream-populate.py RUNDIR SOCKET LIVE_UPDATE_BINARY\n"
             "       c-stream-populate.py --check-ours RUNDIR SOCKET")
    rundir, socket_path, binary = sys.argv[1:]
    dom0 = SocketClient(socket_path)

    # Three guests, introduced by dom0 (frame numbers are ignored by the shim); 3 acts for 2.
    guests = {}
    for domid, port in ((1, 11), (2, 12), (3, 13)):
        guests[domid] = Guest(rundir, domid, port)
        dom0.request(INTRODUCE, payload(str(domid), "0", str(port)))
    dom0.request(SET_TARGET, payload("3", "2"))

    # The tree: nodes at several depths, a value with NUL and high bytes, an empty node.
    for domid in (1, 2, 3):
        home = f"/local/domain/{domid}"
        dom0.request(WRITE, payload(f"{home}/name", f"guest-{domid}".encode()))
        dom0.request(SET_PERMS, payload(home, f"n{domid}", "r0"))
        dom0.request(SET_PERMS, payload(f"{home}/name", f"n{domid}", "r0"))
    dom0.request(WRITE, payload("/local/domain/1/data/deep/deeper/deepest", b"bin\x00\x01\xfe\xffary"))
    dom0.request(MKDIR, payload("/local/domain/1/data/empty"))
    dom0.request(SET_PERMS, payload("/local/domain/1/data", "b1", "r2", "w3"))
    dom0.request(WRITE, payload("/vm/uuid", b"00000000-0000-0000-0000-000000000001"))
    # Domain 4 is named in /vm's permissions and then dies: C flags its entry as stale
    # (ignored), so that a later domain 4 does not inherit the access.
    Guest(rundir, 4, 14)
    dom0.request(INTRODUCE, payload("4", "0", "14"))
    dom0.request(SET_PERMS, payload("/vm", "n0", "r1", "r4"))
    open(os.path.join(rundir, "domains", "4", "dead"), "w").close()
    with open(os.path.join(rundir, "dom-exc"), "wb", buffering=0) as dom_exc:
        dom_exc.write(struct.pack("<I", 4))
    deadline = time.monotonic() + 10
    while dom0.request(IS_DOMAIN_INTRODUCED, payload("4")) != b"F\0":
        if time.monotonic() > deadline:
            fail("domain 4's death was not noticed")
        time.sleep(0.05)
    dom0.request(WRITE, payload("/tool/fixture/counter", b"0"))

    # Watches: guest 1 relative, guest 2 absolute on another guest's home, guest 3 special.
    guests[1].request(WATCH, payload("name", "own-name"))
    guests[2].request(WATCH, payload("/local/domain/1", "peer"))
    guests[3].request(WATCH, payload("@releaseDomain", "released"))
    # A guest's own write, so that its node is owned by it.
    guests[2].request(WRITE, payload("/local/domain/2/name", b"renamed-by-2"))

    # Guest 1 reads nothing from now on: events for its watch pile up, first in its ring
    # (1024 bytes), then in the store's queue (the unsent output of its connection record).
    for round_number in range(40):
        dom0.request(WRITE, payload("/local/domain/1/name", f"guest-1-{round_number:02}".encode()))

    # Guest 2 sends half a request (header and part of the payload): the unread input.
    half = HEADER.pack(READ, 77, 0, len(b"/vm/uuid\0")) + b"/vm/"
    guests[2].send_bytes(half)

    # A second socket client with watches, and half a request of its own.
    watcher = SocketClient(socket_path)
    watcher.request(WATCH, payload("/tool", "tool-watch"))
    watcher.request(WATCH, payload("@introduceDomain", "introduced"))
    watcher.sock.sendall(HEADER.pack(WRITE, 55, 0, 20) + b"/tool/fix")

    # Quota: 4.17's stream has no quota records; set one anyway (the test checks it is lost).
    dom0.request(CONTROL, payload("quota", "set", "nodes", "2000"))
    # Let the store read every half request before the update.
    time.sleep(0.5)

    # The live update, as xenstore-control sends it; the store writes the stream and exec()s
    # the binary, which copies it: no reply to -s comes back.
    dom0.request(CONTROL, payload("live-update", "-f", binary))
    dom0.request_id += 1
    body = payload("live-update", "-s", "-t", "5")
    dom0.sock.sendall(HEADER.pack(CONTROL, dom0.request_id, 0, len(body)) + body)
    time.sleep(1)


if __name__ == "__main__":
    main()
