"""The gRPC server on a unix socket, with one interceptor for errors, metrics and logs.

Services raise domain errors; this edge maps them to status codes and makes sure
no secret from the request can appear in a returned message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from juicefs_csi.errors import DriverError, ErrorKind, Unimplemented
from juicefs_csi.metrics import Metrics
from juicefs_csi.volume.secrets import parse_meta_url, redact

log = logging.getLogger("juicefs_csi.grpc")

STATUS_CODES = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
}
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def request_secret_values(request: Any) -> set[str]:
    """Every value of the request's `secrets` map, and the password inside a meta URL."""
    secrets = getattr(request, "secrets", None)
    if not secrets:
        return set()
    values = set(secrets.values())
    with contextlib.suppress(DriverError):
        password = parse_meta_url(secrets.get("metaurl", "")).password
        if password:
            values.add(password)
    return values


class CsiInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        wrapped = self._wrap(method, handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, method: str, inner: Handler) -> Handler:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            observed = False

            def observe() -> None:
                """Once per call, and before `abort`, which sends the status to the client at once."""
                nonlocal observed
                if not observed:
                    observed = True
                    self.metrics.rpc_duration.labels(method, code.name).observe(time.perf_counter() - started)

            try:
                return await inner(request, context)
            except DriverError as exc:
                code = STATUS_CODES[exc.kind]
                message = redact(exc.message, request_secret_values(request))
                log.warning("rpc failed", extra={"method": method, "code": code.name, "error": message})
                observe()
                await context.abort(code, message)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc crashed", extra={"method": method})
                observe()
                await context.abort(code, f"{method}: internal error, see the driver log")
            finally:
                observe()

        return call


def socket_path(endpoint: str) -> str:
    """`unix:///csi/csi.sock`, `unix:/csi/csi.sock` or a bare path, as kubelet and sidecars write it."""
    if endpoint.startswith("unix://"):
        return endpoint[len("unix://") :]
    if endpoint.startswith("unix:"):
        return endpoint[len("unix:") :]
    if endpoint.startswith("/"):
        return endpoint
    raise ValueError(f"endpoint {endpoint!r} must be a unix socket (unix:///path/csi.sock)")


async def start_server(
    endpoint: str, services: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]], metrics: Metrics
) -> grpc.aio.Server:
    path = socket_path(endpoint)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = grpc.aio.server(interceptors=[CsiInterceptor(metrics)])
    for register, servicer in services:
        register(servicer, server)
    server.add_insecure_port(f"unix://{path}")
    await server.start()
    os.chmod(path, 0o660)
    log.info("CSI server listening", extra={"endpoint": f"unix://{path}"})
    return server


def unimplemented(name: str) -> Any:
    """A servicer method for an RPC the driver does not offer."""

    async def rpc(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unimplemented(f"{name} is not supported by the JuiceFS driver")

    rpc.__name__ = name
    return rpc
