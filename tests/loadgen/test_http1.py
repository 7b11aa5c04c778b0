"""The load generator's HTTP/1.1 connection against a real socket server: chunked bodies,
a kept-alive connection the server closed meanwhile."""

import asyncio

from loadgen.http1 import Connection


async def _serve(responses: list[bytes]) -> tuple[asyncio.Server, int, list[int]]:
    """Answers each request on a connection with the next response; `Connection: close`
    responses end the connection. Returns the server, its port and the connections seen."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        while responses:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            response = responses.pop(0)
            writer.write(response)
            await writer.drain()
            if b"Connection: close" in response:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def test_chunked_and_reconnect() -> None:
    async def scenario() -> None:
        server, port, connections = await _serve(
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Trace-Id: ab\r\n\r\n"
                b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ]
        )
        connection = Connection("127.0.0.1", port)
        first = await connection.request("POST", "/x", b"{}", {})
        second = await connection.request("POST", "/x", b"{}", {})
        third = await connection.request("GET", "/y", b"", {})
        await connection.close()
        server.close()
        await server.wait_closed()

        assert (first.status, first.body, first.headers["x-trace-id"]) == (200, b"abcde", "ab")
        assert (second.status, second.body) == (404, b"no")
        assert (third.status, third.body) == (200, b"")
        assert connections == [0, 1]

    asyncio.run(scenario())
