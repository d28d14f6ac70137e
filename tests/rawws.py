"""A deliberately minimal WebSocket client over a raw socket, for what well-behaved libraries refuse to do:
offer compression and inspect the answer, send invalid UTF-8, never answer pings."""

import asyncio
import base64
import os
import socket
import struct


async def handshake(
    host: str, port: int, path: str, extra_headers: dict[str, str] | None = None, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    sock = socket.socket()
    if rcvbuf:  # a tiny receive window makes a client that stops reading push back on the server at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Host": f"{host}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **(extra_headers or {}),
    }
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(request.encode())
    response = (await reader.readuntil(b"\r\n\r\n")).decode()
    return reader, writer, response


def frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return first & 0x0F, await reader.readexactly(size)


async def close_code(reader: asyncio.StreamReader) -> int:
    """Read frames until a close frame; its status code."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def silent_handshake(host: str, port: int, path: str, extra_headers: dict[str, str]) -> tuple[socket.socket, str]:
    """A client that will read nothing after the handshake (blocking; run it in a thread): a plain socket that
    no event loop reads, with a tiny receive buffer, so the server's sends soon find a closed TCP window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {"Host": f"{host}:{port}", "Upgrade": "websocket", "Connection": "Upgrade"}
    headers |= {"Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **extra_headers}
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(request.encode())
    response = b""
    while not response.endswith(b"\r\n\r\n"):  # byte by byte: not one byte of a frame is read
        response += sock.recv(1)
    return sock, response.decode()


def close_code_blocking(sock: socket.socket) -> int:
    """Read frames (blocking) until a close frame; its status code."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed without a close frame")
            data += chunk
        return data

    while True:
        first, second = exactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", exactly(8))[0]
        payload = exactly(size)
        if first & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0]
