"""``umqtt.simple`` for CPython: the API of micropython-lib's module (MIT licence), written from that API
and MQTT 3.1.1, over ``usocket`` as on the boards. The test's device thus sends real CONNECT, PUBLISH,
SUBSCRIBE, PUBACK and PINGREQ packets to pushgate's real broker through the calls the firmware makes.

As in micropython-lib: ``publish`` at QoS 1 returns once the PUBACK arrived (dispatching PUBLISH packets
that come first to the callback); ``check_msg`` reads without blocking and answers ``None`` when nothing
waits; ``wait_msg`` raises ``OSError(-1)`` when the broker closed the connection; QoS 2 is not supported.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import usocket as socket


class MQTTException(Exception):  # micropython-lib's name
    pass


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _remaining_length(size: int) -> bytes:
    out = bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


class MQTTClient:
    def __init__(
        self,
        client_id: str | bytes,
        server: str,
        port: int = 0,
        user: str | bytes | None = None,
        password: str | bytes | None = None,
        keepalive: int = 0,
        ssl: object = None,
        ssl_params: dict | None = None,
    ) -> None:
        if port == 0:
            port = 8883 if ssl else 1883
        self.client_id = _bytes(client_id)
        self.sock: socket.socket | None = None
        self.server = server
        self.port = port
        self.ssl = ssl
        self.pid = 0
        self.cb: Callable[[bytes, bytes], None] | None = None
        self.user = None if user is None else _bytes(user)
        self.pswd = None if password is None else _bytes(password)
        self.keepalive = keepalive
        self.lw_topic: bytes | None = None
        self.lw_msg: bytes | None = None
        self.lw_qos = 0
        self.lw_retain = False

    def _send_str(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.write(struct.pack("!H", len(data)))
        self.sock.write(data)

    def _read(self, size: int) -> bytes:
        assert self.sock is not None
        data = self.sock.read(size)
        if not data or len(data) < size:
            raise OSError(-1)  # the broker closed the connection
        return data

    def _recv_len(self) -> int:
        size = shift = 0
        while True:
            byte = self._read(1)[0]
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return size
            shift += 7

    def set_callback(self, f: Callable[[bytes, bytes], None]) -> None:
        self.cb = f

    def set_last_will(self, topic: str | bytes, msg: str | bytes, retain: bool = False, qos: int = 0) -> None:
        if not 0 <= qos <= 2 or not topic:
            raise ValueError("a will needs a topic and a QoS of 0-2")
        self.lw_topic, self.lw_msg, self.lw_qos, self.lw_retain = _bytes(topic), _bytes(msg), qos, retain

    def connect(self, clean_session: bool = True, timeout: float | None = None) -> bool:
        """CONNECT and wait for the CONNACK; answers the session-present flag, raises ``MQTTException``
        with the return code on a refusal (5: not authorised)."""
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        self.sock.connect(socket.getaddrinfo(self.server, self.port)[0][-1])
        flags = 0x02 if clean_session else 0
        payload = struct.pack("!H", len(self.client_id)) + self.client_id
        if self.lw_topic is not None and self.lw_msg is not None:
            flags |= 0x04 | self.lw_qos << 3 | self.lw_retain << 5
            payload += struct.pack("!H", len(self.lw_topic)) + self.lw_topic
            payload += struct.pack("!H", len(self.lw_msg)) + self.lw_msg
        if self.user:
            flags |= 0x80
            payload += struct.pack("!H", len(self.user)) + self.user
            if self.pswd is not None:
                flags |= 0x40
                payload += struct.pack("!H", len(self.pswd)) + self.pswd
        variable = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", self.keepalive)
        body = variable + payload
        self.sock.write(b"\x10" + _remaining_length(len(body)) + body)
        resp = self._read(4)
        if resp[0] != 0x20 or resp[1] != 0x02:
            raise MQTTException(f"expected CONNACK, got {resp!r}")
        if resp[3] != 0:
            raise MQTTException(resp[3])
        return bool(resp[2] & 1)

    def disconnect(self) -> None:
        assert self.sock is not None
        self.sock.write(b"\xe0\x00")
        self.sock.close()

    def ping(self) -> None:
        assert self.sock is not None
        self.sock.write(b"\xc0\x00")

    def publish(self, topic: str | bytes, msg: str | bytes, retain: bool = False, qos: int = 0) -> None:
        assert self.sock is not None
        if qos == 2:
            raise MQTTException("QoS 2 is not supported")
        topic_b, msg_b = _bytes(topic), _bytes(msg)
        pid = b""
        if qos:
            self.pid = self.pid % 0xFFFF + 1
            pid = struct.pack("!H", self.pid)
        body = struct.pack("!H", len(topic_b)) + topic_b + pid + msg_b
        header = bytes([0x30 | qos << 1 | int(retain)]) + _remaining_length(len(body))
        self.sock.write(header + body)
        if qos == 1:
            while True:
                if self.wait_msg() == 0x40:
                    size = self._read(1)
                    if size != b"\x02":
                        raise MQTTException("malformed PUBACK")
                    if self._read(2) == pid:
                        return

    def subscribe(self, topic: str | bytes, qos: int = 0) -> None:
        """SUBSCRIBE and wait for the SUBACK; a refusal (0x80) raises ``MQTTException(0x80)``."""
        assert self.sock is not None
        if self.cb is None:
            raise MQTTException("set_callback() before subscribe()")
        topic_b = _bytes(topic)
        self.pid = self.pid % 0xFFFF + 1
        pid = struct.pack("!H", self.pid)
        body = pid + struct.pack("!H", len(topic_b)) + topic_b + bytes([qos])
        self.sock.write(b"\x82" + _remaining_length(len(body)) + body)
        while True:
            if self.wait_msg() == 0x90:
                resp = self._read(4)
                if resp[0] != 0x03 or resp[1:3] != pid:
                    raise MQTTException(f"unexpected SUBACK {resp!r}")
                if resp[3] == 0x80:
                    raise MQTTException(resp[3])
                return

    def wait_msg(self) -> int | None:
        """Read one packet: a PUBLISH goes to the callback (and is acknowledged at QoS 1); the type byte of
        any other packet is answered for the caller to read the rest; ``None`` for nothing or a PINGRESP."""
        assert self.sock is not None
        res = self.sock.read(1)
        self.sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            if self._read(1)[0] != 0:
                raise MQTTException("malformed PINGRESP")
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        size = self._recv_len()
        topic_len = struct.unpack("!H", self._read(2))[0]
        topic = self._read(topic_len)
        size -= topic_len + 2
        pid = b""
        if op & 6:
            pid = self._read(2)
            size -= 2
        msg = self._read(size) if size else b""
        if self.cb is not None:
            self.cb(topic, msg)
        if op & 6 == 2:
            self.sock.write(b"\x40\x02" + pid)
        elif op & 6 == 4:
            raise MQTTException("QoS 2 is not supported")
        return op

    def check_msg(self) -> int | None:
        """``wait_msg`` without blocking: ``None`` at once when nothing waits."""
        assert self.sock is not None
        self.sock.setblocking(False)
        return self.wait_msg()
