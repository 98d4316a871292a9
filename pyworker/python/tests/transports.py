"""The runtime's side of streams, callbacks and sessions, on either transport,
for the protocol-2 tests: the native one through native_client.NativeClient,
the gRPC one through the generated stub (imported only when used).

Items a stream delivers are ``("chunk", value)`` (bytes for a raw chunk),
``("end", None)`` or ``("error", {"kind", "type", "message", "traceback"})``.
"""

from __future__ import annotations

import json
import queue
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from helpers import WorkerProcess, pythons_under_test
from native_client import CHUNK, ERROR, RESULT, NativeClient

#: (transport, interpreter): native under every interpreter of
#: $SNAKEPIT_TEST_PYTHONS, gRPC under the one running pytest.
TRANSPORTS = [("native", p) for p in pythons_under_test()] + [("grpc", sys.executable)]
TRANSPORT_IDS = [f"{t}-{p}" for t, p in TRANSPORTS]

Item = Tuple[str, Any]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _kind_name(kind: int) -> str:
    from snakepit.v1 import worker_pb2

    return worker_pb2.ErrorInfo.Kind.Name(kind).replace("KIND_", "")


# ------------------------------------------------------------------ streams


class NativeStream:
    """One streaming call on a NativeClient."""

    def __init__(self, client: NativeClient, tool: str, args: Dict[str, Any], window: int,
                 **kw: Any) -> None:
        self.client = client
        self.window = window
        self.id = client.stream(tool, args, window=window, **kw)

    def next(self, timeout: float = 10.0) -> Item:
        self.client.sock.settimeout(timeout)
        try:
            frame = self.client.next_on(self.id)
        finally:
            self.client.sock.settimeout(10.0)
        if frame.type == CHUNK:
            return ("chunk", frame.chunk())
        if frame.type == RESULT:
            assert frame.body == b"" and frame.flags == 0, frame
            return ("end", None)
        assert frame.type == ERROR, frame
        return ("error", frame.error)

    def quiet(self, seconds: float) -> None:
        """Nothing arrives on the connection for ``seconds``."""
        self.client.sock.settimeout(seconds)
        try:
            got = self.client.sock.recv(1, socket.MSG_PEEK)
        except (socket.timeout, TimeoutError):
            return
        finally:
            self.client.sock.settimeout(10.0)
        raise AssertionError(f"expected nothing for {seconds}s, got data ({got!r}...)")

    def credit(self, n: int = 1) -> None:
        self.client.credit(self.id, n)

    def cancel(self) -> None:
        self.client.cancel(self.id)

    def abandon(self) -> None:
        """The runtime goes away: the connection closes."""
        self.client.close()


class GrpcStream:
    """One ExecuteStream RPC; a thread collects what the worker sends."""

    def __init__(self, process: WorkerProcess, tool: str, args: Dict[str, Any], window: int,
                 deadline_ns: int = 0, session: str = "", request_id: str = "",
                 timeout: float = 60.0) -> None:
        from snakepit.v1 import worker_pb2

        self._pb = worker_pb2
        self.window = window
        self.request_id = request_id or uuid.uuid4().hex
        self._controls: "queue.Queue[Any]" = queue.Queue()
        self._controls.put(worker_pb2.StreamControl(start=worker_pb2.StreamStart(
            execute=worker_pb2.ExecuteRequest(
                request_id=self.request_id, tool=tool, args_json=json.dumps(args).encode(),
                deadline_unix_nano=deadline_ns, session_id=session),
            window=window)))
        self._items: "queue.Queue[Item]" = queue.Queue()
        self.call = process.stub.ExecuteStream(iter(self._controls.get, None),
                                               metadata=process.metadata(), timeout=timeout)
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        import grpc

        try:
            for message in self.call:
                which = message.WhichOneof("msg")
                if which == "chunk_json":
                    self._items.put(("chunk", json.loads(message.chunk_json)))
                elif which == "chunk_raw":
                    self._items.put(("chunk", bytes(message.chunk_raw)))
                elif which == "end":
                    self._items.put(("end", None))
                else:
                    error = message.error
                    self._items.put(("error", {
                        "kind": _kind_name(error.kind), "type": error.type,
                        "message": error.message, "traceback": error.traceback}))
        except grpc.RpcError as exc:
            self._items.put(("rpc-error", exc.code()))
        finally:
            self._controls.put(None)  # ends the request stream

    def next(self, timeout: float = 10.0) -> Item:
        return self._items.get(timeout=timeout)

    def quiet(self, seconds: float) -> None:
        try:
            item = self._items.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"expected nothing for {seconds}s, got {item!r}")

    def credit(self, n: int = 1) -> None:
        self._controls.put(self._pb.StreamControl(credit=n))

    def cancel(self) -> None:
        self._controls.put(self._pb.StreamControl(cancel=True))

    def abandon(self) -> None:
        """The runtime goes away: the RPC is cancelled."""
        self.call.cancel()


def drain(stream: Any, timeout: float = 10.0) -> Tuple[List[Any], Item]:
    """Read a stream to its end, giving one credit back per chunk and
    checking no chunk comes beyond the credit; ``(items, final)``."""
    items: List[Any] = []
    granted = stream.window
    while True:
        kind, value = stream.next(timeout)
        if kind != "chunk":
            return items, (kind, value)
        items.append(value)
        assert len(items) <= granted, f"chunk {len(items)} beyond the credit of {granted}"
        stream.credit(1)
        granted += 1


# ---------------------------------------------------------------- callbacks


class Callback:
    """One callback the worker made: ``id``, ``name``, ``parent``, ``args``
    (the JSON object) and ``binary`` (the raw arguments)."""

    def __init__(self, callback_id: int, name: str, parent: str, args: Dict[str, Any],
                 binary: Dict[str, bytes]) -> None:
        self.id, self.name, self.parent, self.args, self.binary = (
            callback_id, name, parent, args, binary)

    def __repr__(self) -> str:
        return f"Callback({self.id}, {self.name!r}, parent={self.parent!r}, args={self.args!r})"


class NativeCallbacks:
    """The runtime's end of callbacks on a native connection."""

    def __init__(self, client: NativeClient) -> None:
        self.client = client

    def next(self, timeout: float = 10.0) -> Callback:
        self.client.sock.settimeout(timeout)
        try:
            frame = self.client.next_callback()
        finally:
            self.client.sock.settimeout(10.0)
        meta, binary = frame.callback()
        assert set(meta) == {"name", "parent", "args", "bin"}, meta
        return Callback(frame.stream, meta["name"], meta["parent"], meta["args"], binary)

    def result(self, callback_id: int, value: Any = None, raw: Optional[bytes] = None) -> None:
        self.client.callback_result(callback_id, value, raw)

    def error(self, callback_id: int, kind: str, message: str) -> None:
        self.client.callback_error(callback_id, kind, message)


class GrpcCallbacks:
    """The runtime's end of a ``Callbacks`` RPC: a thread collects the
    worker's requests; replies go out through the request iterator."""

    def __init__(self, process: WorkerProcess) -> None:
        from snakepit.v1 import worker_pb2

        self._pb = worker_pb2
        self._replies: "queue.Queue[Any]" = queue.Queue()
        self._requests: "queue.Queue[Any]" = queue.Queue()
        self.call = process.stub.Callbacks(iter(self._replies.get, None),
                                           metadata=process.metadata())
        self.call.initial_metadata()  # the worker sends it once the stream carries callbacks
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        import grpc

        try:
            for request in self.call:
                self._requests.put(request)
        except grpc.RpcError as exc:
            self._requests.put(exc)

    def next(self, timeout: float = 10.0) -> Callback:
        request = self._requests.get(timeout=timeout)
        assert not isinstance(request, Exception), request
        return Callback(request.id, request.name, request.parent_request_id,
                        json.loads(request.args_json) if request.args_json else {},
                        {k: bytes(v) for k, v in request.binary_args.items()})

    def result(self, callback_id: int, value: Any = None, raw: Optional[bytes] = None) -> None:
        if raw is not None:
            self._replies.put(self._pb.CallbackReply(id=callback_id, result_raw=raw))
        else:
            self._replies.put(self._pb.CallbackReply(id=callback_id,
                                                     result_json=json.dumps(value).encode()))

    def error(self, callback_id: int, kind: str, message: str) -> None:
        self._replies.put(self._pb.CallbackReply(
            id=callback_id, error=self._pb.CallbackError(kind=kind, message=message)))

    def close(self) -> None:
        """The runtime ends its side of the RPC."""
        self._replies.put(None)

    def abandon(self) -> None:
        self.call.cancel()


class PendingCall:
    """A call started without waiting for it."""

    def __init__(self, result: Callable[[float], Item], cancel: Callable[[], None]) -> None:
        self._result = result
        self.cancel = cancel

    def result(self, timeout: float = 30.0) -> Item:
        return self._result(timeout)


# ------------------------------------------------------------------ runtime


class Runtime:
    """A worker seen from the runtime's side, whatever its transport."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process
        self.transport = process.transport
        self._client: Optional[NativeClient] = None

    @property
    def client(self) -> NativeClient:
        """The native connection streams and calls use (opened on first use)."""
        if self._client is None:
            self._client = self.process.connect()
        return self._client

    def stream(self, tool: str, args: Optional[Dict[str, Any]] = None, window: int = 4,
               **kw: Any) -> Any:
        if self.transport == "native":
            return NativeStream(self.client, tool, args or {}, window, **kw)
        return GrpcStream(self.process, tool, args or {}, window, **kw)

    def call(self, tool: str, args: Optional[Dict[str, Any]] = None, *, session: str = "",
             deadline_ns: int = 0, request_id: str = "", binary: Optional[Dict[str, bytes]] = None,
             timeout: float = 30.0) -> Item:
        """A plain call on its own connection: ``("ok", value)`` or ``("error", {...})``."""
        request_id = request_id or uuid.uuid4().hex
        if self.transport == "native":
            with self.process.connect() as c:
                c.sock.settimeout(timeout)
                frame = c.call(tool, args or {}, session=session or None, deadline_ns=deadline_ns,
                               request_id=request_id, binary=binary)
            if frame.type == RESULT:
                return ("ok", frame.body if frame.raw else frame.value())
            return ("error", frame.error)
        from snakepit.v1 import worker_pb2

        reply = self.process.stub.Execute(worker_pb2.ExecuteRequest(
            request_id=request_id, tool=tool, args_json=json.dumps(args or {}).encode(),
            binary_args=binary or {}, deadline_unix_nano=deadline_ns, session_id=session),
            metadata=self.process.metadata(), timeout=timeout)
        which = reply.WhichOneof("outcome")
        if which == "result_json":
            return ("ok", json.loads(reply.result_json))
        if which == "result_raw":
            return ("ok", bytes(reply.result_raw))
        return ("error", {"kind": _kind_name(reply.error.kind), "type": reply.error.type,
                          "message": reply.error.message, "traceback": reply.error.traceback})

    def callbacks(self) -> Any:
        """The runtime's end of the worker's callbacks (gRPC: a Callbacks RPC
        opened now; native: the connection streams and start_call use)."""
        if self.transport == "native":
            return NativeCallbacks(self.client)
        return GrpcCallbacks(self.process)

    def start_call(self, tool: str, args: Optional[Dict[str, Any]] = None, *,
                   request_id: str = "", deadline_ns: int = 0, session: str = "",
                   binary: Optional[Dict[str, bytes]] = None) -> PendingCall:
        """Start a plain call (native: on ``client``) and return at once."""
        request_id = request_id or uuid.uuid4().hex
        if self.transport == "native":
            client = self.client
            stream = client.start(tool, args or {}, request_id=request_id,
                                  deadline_ns=deadline_ns, binary=binary,
                                  session=session or None)

            def native_result(timeout: float) -> Item:
                client.sock.settimeout(timeout)
                try:
                    frame = client.wait(stream)
                finally:
                    client.sock.settimeout(10.0)
                if frame.type == RESULT:
                    return ("ok", frame.body if frame.raw else frame.value())
                return ("error", frame.error)

            return PendingCall(native_result, lambda: client.cancel(stream))
        from snakepit.v1 import worker_pb2

        future = self.process.stub.Execute.future(worker_pb2.ExecuteRequest(
            request_id=request_id, tool=tool, args_json=json.dumps(args or {}).encode(),
            binary_args=binary or {}, deadline_unix_nano=deadline_ns, session_id=session),
            metadata=self.process.metadata(), timeout=60)

        def grpc_result(timeout: float) -> Item:
            reply = future.result(timeout=timeout)
            which = reply.WhichOneof("outcome")
            if which == "result_json":
                return ("ok", json.loads(reply.result_json))
            if which == "result_raw":
                return ("ok", bytes(reply.result_raw))
            return ("error", {"kind": _kind_name(reply.error.kind), "type": reply.error.type,
                              "message": reply.error.message,
                              "traceback": reply.error.traceback})

        return PendingCall(grpc_result, future.cancel)

    def value(self, tool: str, args: Optional[Dict[str, Any]] = None, **kw: Any) -> Any:
        outcome = self.call(tool, args, **kw)
        assert outcome[0] == "ok", outcome
        return outcome[1]

    def stats(self) -> Dict[str, Any]:
        if self.transport == "native":
            with self.process.connect() as c:
                return c.request("stats")
        reply = self.process.stats()
        return {field.name: getattr(reply, field.name) for field in reply.DESCRIPTOR.fields}

    def end_session(self, session_id: str, timeout: float = 30.0) -> Dict[str, Any]:
        if self.transport == "native":
            with self.process.connect() as c:
                c.sock.settimeout(timeout)
                return c.request("session_end", session=session_id)
        from snakepit.v1 import worker_pb2

        reply = self.process.stub.EndSession(worker_pb2.EndSessionRequest(session_id=session_id),
                                             metadata=self.process.metadata(), timeout=timeout)
        return {"ended": reply.ended, "hook_error": reply.hook_error}

    def shutdown(self, grace_ms: int) -> None:
        if self.transport == "native":
            with self.process.connect() as c:
                c.request("shutdown", grace_ms=grace_ms)
            return
        from snakepit.v1 import worker_pb2

        self.process.stub.Shutdown(worker_pb2.ShutdownRequest(grace_ms=grace_ms),
                                   metadata=self.process.metadata(), timeout=10)


@pytest.fixture(params=TRANSPORTS, ids=TRANSPORT_IDS)
def transport(request: pytest.FixtureRequest) -> Tuple[str, str]:
    if request.param[0] == "grpc":
        pytest.importorskip("grpc")
    return request.param


@pytest.fixture
def start(transport: Tuple[str, str]) -> Iterator[Callable[..., Runtime]]:
    """Start workers on the test's transport; all are killed at teardown."""
    name, python = transport
    started: List[WorkerProcess] = []

    def start_worker(adapter: str, capacity: int = 2, *flags: str, **kw: Any) -> Runtime:
        process = WorkerProcess(adapter, capacity=capacity, transport=name, python=python,
                                extra_args=flags, **kw)
        started.append(process)
        process.wait_ready()
        return Runtime(process)

    yield start_worker
    for process in started:
        process.close()
