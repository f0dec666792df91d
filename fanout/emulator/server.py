"""Running the emulator: in the current event loop (`Emulator`, `running_emulator`) or in a
background thread with its own loop (`EmulatorThread`, for sync tests that run `fanout`).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from fanout.emulator.app import EmulatorApp
from fanout.emulator.config import EmulatorConfig
from fanout.emulator.state import World

__all__ = ["Emulator", "EmulatorStartError", "EmulatorThread", "running_emulator"]

_T = TypeVar("_T")
_LISTEN_BACKLOG = 1024  # many concurrent clients connect at once in benchmarks
_CERT_DAYS = 30
# Every RPC parameter travels in the query string: Parameters alone may be 16-24 KB of JSON,
# up to three times that once percent-encoded. aiohttp's default request line limit is 8 KB.
_MAX_REQUEST_LINE_BYTES = 1024 * 1024
_SHUTDOWN_TIMEOUT_S = 1.0  # in-flight requests get this long to finish when the emulator stops
_THREAD_START_TIMEOUT_S = 120.0  # a 100 000-instance fleet takes a moment to build


class EmulatorStartError(RuntimeError):
    """The emulator could not start (bad fleet file, no openssl for --tls, port in use)."""


class Emulator:
    """The emulator server in the current event loop."""

    def __init__(
        self, config: EmulatorConfig | None = None, *, wall: Callable[[], float] | None = None
    ) -> None:
        """`wall` is the clock's time source: the real wall clock unless `fanout simulate`
        shares its simulated one (`fanout.simtime`)."""
        self.config = config or EmulatorConfig()
        self._wall = wall or time.time
        problems = self.config.problems()
        if problems:
            raise ValueError("invalid emulator config: " + "; ".join(problems))
        self._world: World | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.cert_path: Path | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (or `https://` with TLS), once started."""
        if not self._url:
            raise RuntimeError("the emulator is not started")
        return self._url

    @property
    def world(self) -> World:
        """The live state (for in-process inspection)."""
        if self._world is None:
            raise RuntimeError("the emulator is not started")
        return self._world

    async def start(self) -> None:
        """Build the fleet, bind the port, serve."""
        config = self.config
        try:
            self._world = World(config, wall=self._wall)
        except ValueError as exc:
            raise EmulatorStartError(str(exc)) from exc
        ssl_context = await self._ssl_context() if config.tls else None
        runner = web.AppRunner(
            EmulatorApp(self._world).build(),
            access_log=None,
            handle_signals=False,
            max_line_size=_MAX_REQUEST_LINE_BYTES,
            max_field_size=_MAX_REQUEST_LINE_BYTES,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(
            runner, config.host, config.port, ssl_context=ssl_context, backlog=_LISTEN_BACKLOG
        )
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise EmulatorStartError(
                f"cannot listen on {config.host}:{config.port}: {exc}"
            ) from exc
        port = runner.addresses[0][1]
        scheme = "https" if config.tls else "http"
        self._url = f"{scheme}://{config.host}:{port}"

    async def close(self) -> None:
        """Stop serving and remove the certificate directory."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def snapshot(self) -> dict[str, Any]:
        """The same JSON as `GET /_emulator/state`."""
        return self.world.snapshot()

    async def _ssl_context(self) -> ssl.SSLContext:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise EmulatorStartError("--tls needs the openssl command, which is not on PATH")
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fanout-emulator-")
        folder = Path(self._tmpdir.name)
        await asyncio.to_thread(_make_certificate, openssl, folder, self.config.host)
        self.cert_path = folder / "cert.pem"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, folder / "key.pem")
        return context


def _make_certificate(openssl: str, folder: Path, host: str) -> None:
    """A self-signed certificate for the host, with an IP subjectAltName."""
    san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
    command = [
        openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
        "-days", str(_CERT_DAYS), "-subj", f"/CN={host}",
        "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
        "-addext", f"subjectAltName={san}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv, no shell
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise EmulatorStartError(f"openssl could not make a certificate: {last}")


@asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None, *, wall: Callable[[], float] | None = None
) -> AsyncIterator[Emulator]:
    """Start an emulator in the current loop for the duration of the block (`wall`: its
    clock's time source, see `Emulator`)."""
    emulator = Emulator(config, wall=wall)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.close()


class EmulatorThread:
    """The emulator in a background thread with its own event loop (for synchronous code)."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.emulator = Emulator(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The emulator's base URL."""
        return self.emulator.url

    @property
    def cert_path(self) -> Path | None:
        """The self-signed certificate with `tls=True`."""
        return self.emulator.cert_path

    def __enter__(self) -> EmulatorThread:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="fanout-emulator", daemon=True
        )
        self._thread.start()
        try:
            self._run(self.emulator.start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._run(self.emulator.close())
        finally:
            self._stop_loop()

    def snapshot(self) -> dict[str, Any]:
        """The `/_emulator/state` document, read inside the server's loop (thread-safe)."""

        if self._loop is None:
            raise RuntimeError("the emulator thread is not running")

        async def read() -> dict[str, Any]:
            return self.emulator.snapshot()

        return self._run(read())

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            raise RuntimeError("the emulator thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_THREAD_START_TIMEOUT_S)

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = None
        self._thread = None
