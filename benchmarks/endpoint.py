"""A fast HTTP endpoint on 127.0.0.1 for measuring load generators: every request gets a tiny 200.

It parses only what it must (request heads, an optional Content-Length body) so that, on the
same machine, the generator and not the endpoint runs out first. Run it as

    python -m benchmarks.endpoint --port PORT

It prints ``ready PORT`` once listening, and exits when its parent does or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"Connection: keep-alive\r\n\r\nok")
HOST = "127.0.0.1"


class Connection(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            body_length = _content_length(self.buffer[:head_end])
            request_end = head_end + 4 + body_length
            if len(self.buffer) < request_end:
                return
            self.buffer = self.buffer[request_end:]
            self.transport.write(RESPONSE)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, HOST, port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    while not stop.is_set():
        # a benchmark killed hard must not leave its endpoint behind
        if os.getppid() != parent:
            break
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port, printed on the ready line")
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
