"""``owdedup serve``'s HTTP glue under hostile or broken clients (issue 8, item 14): a
stranger's body is never read, a silent client is dropped, bad framing gets an answer, a
zip bomb is refused and deleted code leaves nothing behind."""

from __future__ import annotations

import base64
import io
import socket
import zipfile
from pathlib import Path

from owdedup.serve.catalog import MB, UNPACKED_CODE_LIMIT
from owdedup.serve.server import LISTEN_BACKLOG, DevServer
from tests.serve.conftest import AUTH, Client, ServerFactory, zip_code

BASIC = "Basic " + base64.b64encode(AUTH.encode()).decode()


def _connect(server: DevServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def _read_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 30 s pass)."""
    chunks = []
    while True:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_unauthenticated_body_is_refused_before_it_is_read(server: DevServer) -> None:
    with _connect(server) as connection:
        # 70 MB announced, none sent: the old server sat reading it; the answer must come
        # from the headers alone.
        connection.sendall(b"PUT /api/v1/namespaces/_/actions/x HTTP/1.1\r\n"
                           b"Host: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 73400320\r\n\r\n")
        answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_an_oversized_body_for_the_endpoint_is_refused_unread(server: DevServer) -> None:
    with _connect(server) as connection:
        connection.sendall(b"POST /api/v1/namespaces/_/actions/x HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: " + BASIC.encode() + b"\r\n"
                           b"Content-Length: 73400320\r\n\r\n")
        answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_silent_client_is_dropped(make_server: ServerFactory) -> None:
    server = make_server(idle_timeout_s=0.5)
    with _connect(server) as connection:
        connection.sendall(b"POST /api/v1/namespaces/_/actions/x HTTP/1.1\r\nHost: x\r\n")
        assert _read_answer(connection) == b""  # closed by the server, before our 30 s
    with _connect(server) as connection:  # and half a body
        connection.sendall(b"POST /api/v1/namespaces/_/actions/x HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: " + BASIC.encode() + b"\r\n"
                           b"Content-Length: 100\r\n\r\n{\"a\":")
        assert _read_answer(connection) == b""
    assert Client(server.url).request("GET", "actions").status == 200  # still serving


def test_a_garbage_content_length_gets_a_400(server: DevServer) -> None:
    for length in (b"banana", b"-5", b"1e3"):
        with _connect(server) as connection:
            connection.sendall(b"POST /api/v1/namespaces/_/actions/x HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: " + BASIC.encode() + b"\r\n"
                               b"Content-Length: " + length + b"\r\n\r\n")
            answer = _read_answer(connection)
        assert answer.startswith(b"HTTP/1.1 400"), (length, answer[:200])
        assert b"Content-Length" in answer


def test_a_stranger_is_not_invited_to_send_the_body(server: DevServer) -> None:
    with _connect(server) as connection:
        connection.sendall(b"PUT /api/v1/namespaces/_/actions/x HTTP/1.1\r\nHost: x\r\n"
                           b"Expect: 100-continue\r\nContent-Length: 73400320\r\n\r\n")
        answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"100 Continue" not in answer


def test_a_garbage_chunk_size_gets_a_400(server: DevServer) -> None:
    with _connect(server) as connection:
        connection.sendall(b"POST /api/v1/namespaces/_/actions/x HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: " + BASIC.encode() + b"\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
        answer = _read_answer(connection)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"chunk size" in answer


def test_the_listen_backlog_is_not_five(server: DevServer) -> None:
    assert server.httpd.request_queue_size == LISTEN_BACKLOG >= 128


def _zip_bomb() -> str:
    """A zip whose single member unpacks to just over the limit (zeros compress ~1000:1)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", "def main(p):\n    return p\n")
        with archive.open("blob.bin", "w", force_zip64=True) as member:
            block = bytes(MB)
            for _ in range(UNPACKED_CODE_LIMIT // MB + 1):
                member.write(block)
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_zip_bomb_is_refused(client: Client) -> None:
    bomb = _zip_bomb()
    assert len(bomb) < 2 * MB  # small on the wire
    reply = client.put("actions/bomb", {"exec": {"kind": "python:3.11", "code": bomb,
                                                 "binary": True}})
    assert reply.status == 413
    assert "unpacks larger than allowed" in reply.json["error"]
    assert client.request("GET", "actions/bomb").status == 404


def test_deleted_code_leaves_nothing_on_disk(make_server: ServerFactory, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = make_server(state_dir=state)
    client = Client(server.url)
    client.action("zipped", zip_code({"__main__.py": "def main(p):\n    return {'ok': 1}\n"}),
                  binary=True)
    assert client.invoke("zipped").status == 200
    unpacked = [path for path in (state / "cache").iterdir() if path.is_dir()]
    assert unpacked, "the invoke unpacked the code"
    assert client.request("DELETE", "actions/zipped").status == 200
    assert [path for path in (state / "cache").iterdir() if path.is_dir()] == []
    assert list((state / "code").iterdir()) == []


def test_a_zip_of_too_many_members_is_refused_before_it_is_listed(client: Client) -> None:
    # Each member costs the server an object while the zip is listed, and a file when it is
    # unpacked: 600,000 empty members (49 MB) took 286 MiB and 19 s to list.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("__main__.py", "def main(p):\n    return p\n")
        for index in range(90_000):
            archive.writestr(zipfile.ZipInfo(f"{index:05x}"), b"")
    reply = client.put("actions/crowd", {"exec": {"kind": "python:3.11", "binary": True,
                                                  "code": base64.b64encode(
                                                      buffer.getvalue()).decode()}})
    assert reply.status == 413, reply.raw
    assert "lists too many members" in reply.json["error"]
    assert client.request("GET", "actions/crowd").status == 404


def test_a_body_in_one_byte_chunks_costs_about_its_size(server: DevServer) -> None:
    # Kept as a list of chunks, 400 kB sent one byte a chunk held 34 MB in the server
    # (traced): an action PUT may carry 72 MB, so about 6 GB.
    import tracemalloc

    body = b'{"parameters": [], "annotations": [{"key": "x", "value": "' + b"a" * 400_000 + b'"}]}'
    framed = b"".join(b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(len(body)))
    connection = _connect(server)
    tracemalloc.start()
    try:
        connection.sendall(
            b"PUT /api/v1/namespaces/_/triggers/chunky?overwrite=true HTTP/1.1\r\n"
            b"Host: x\r\nAuthorization: " + BASIC.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + framed + b"0\r\n\r\n")
        answer = _read_answer(connection)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        connection.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert peak < 8 * MB, f"the server held {peak / MB:.1f} MB for a 0.4 MB body"
