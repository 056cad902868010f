"""A real S3 API server on loopback for the tests: moto's threaded server, bound to
127.0.0.1 on a free port, that a test can kill (every connection cut, new ones refused)
and start again on the same port with the same buckets and objects."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

HOST = "127.0.0.1"
BUCKET = "medshard-test"


class LoopbackS3(ThreadedMotoServer):
    """moto's threaded server that also cuts the connections it has open when stopped
    (werkzeug's keep-alive handlers would go on answering on them)."""

    def __init__(self, port: int = 0):
        super().__init__(ip_address=HOST, port=port, verbose=False)
        self._connections: list[socket.socket] = []
        self._guard = threading.Lock()

    def start(self) -> None:
        super().start()
        server = self._server
        handle = server.RequestHandlerClass
        owner = self

        class Tracked(handle):
            def setup(self) -> None:
                super().setup()
                with owner._guard:
                    owner._connections.append(self.connection)

        server.RequestHandlerClass = Tracked
        self._port = self.get_host_and_port()[1]

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self._port}"

    def kill(self) -> None:
        """Stop answering: the listening socket closed, open connections cut."""
        self.stop()
        self._server.server_close()
        with self._guard:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already closed by its client
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def restart(self) -> None:
        """Answer again on the same port (moto keeps its buckets in this process)."""
        ThreadedMotoServer.__init__(self, ip_address=HOST, port=self._port, verbose=False)
        self.start()


@pytest.fixture
def s3(monkeypatch) -> Iterator[LoopbackS3]:
    """The server, with credentials and a bucket, its endpoint in MEDSHARD_S3_ENDPOINT."""
    import boto3
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(logging.getLogger("werkzeug"), "level", logging.ERROR)  # no request log
    server = LoopbackS3()
    server.start()
    monkeypatch.setenv("MEDSHARD_S3_ENDPOINT", server.endpoint)
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()
        server._server.server_close()
        s3_backends[DEFAULT_ACCOUNT_ID]["global"].reset()
