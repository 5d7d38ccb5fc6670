"""compat.twisted.write_now: straight to the socket only when nothing is buffered before it,
so the bytes a client receives are in the order they were written."""

from __future__ import annotations

from aiim_project.compat.twisted import write_now


class Transport:
    """Twisted's FileDescriptor buffer fields, and a socket that takes `room` bytes."""

    def __init__(self, room: int = 1 << 20, tls: bool = False):
        self.connected, self._writeDisconnected, self.TLS = True, False, tls
        self.dataBuffer, self.offset, self._tempDataBuffer = b"", 0, []
        self.room = room
        self.wire = b""  # what the kernel took

    def writeSomeData(self, data: bytes) -> int:
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.wire += taken
        return len(taken)

    def write(self, data: bytes) -> None:
        self._tempDataBuffer.append(data)

    def flush(self) -> bytes:
        """What a later doWrite would send: the buffer, after what went straight out."""
        return self.wire + self.dataBuffer[self.offset :] + b"".join(self._tempDataBuffer)


def test_an_idle_transport_sends_at_once_and_buffers_nothing():
    t = Transport()
    write_now(t, b"frame-1")
    write_now(t, b"frame-2")
    assert t.wire == b"frame-1frame-2" and t._tempDataBuffer == []


def test_what_the_socket_does_not_take_is_buffered_and_later_frames_queue_behind_it():
    t = Transport(room=4)
    write_now(t, b"frame-1")
    write_now(t, b"frame-2")  # the buffer is not empty: no jumping ahead
    assert t.wire == b"fram"
    assert t._tempDataBuffer == [b"e-1", b"frame-2"]
    assert t.flush() == b"frame-1frame-2"


def test_a_tls_transport_and_a_closing_one_take_the_ordinary_path():
    for t in (Transport(tls=True), Transport()):
        if not t.TLS:
            t._writeDisconnected = True
        write_now(t, b"frame")
        assert t.wire == b"" and t._tempDataBuffer == [b"frame"]


def test_an_unknown_transport_takes_the_ordinary_path():
    class Plain:
        def __init__(self):
            self.written = []

        def write(self, data):
            self.written.append(data)

    t = Plain()
    write_now(t, b"frame")
    assert t.written == [b"frame"]
