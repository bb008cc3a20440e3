"""OTLP/HTTP on the wire: which encoding a request uses, taking off its gzip within a size limit,
decoding it into opentelemetry-proto's generated messages (binary protobuf or OTLP's JSON), and
encoding the answers (an Export*ServiceResponse, or a google.rpc.Status for a failure) in the
request's own encoding. It reads and writes bytes only; what the records mean is
`corral.ingest.otlp`'s. Nothing here parses protobuf by hand."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any, Literal

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse)

from corral.errors import CorralError, InvalidRequest, PayloadTooLarge

Signal = Literal["logs", "metrics"]
Encoding = Literal["protobuf", "json"]
MEDIA_TYPES: dict[Encoding, str] = {"protobuf": "application/x-protobuf", "json": "application/json"}
_ACCEPTED = {"application/x-protobuf": "protobuf", "application/protobuf": "protobuf", "application/json": "json"}
_REQUESTS: dict[Signal, type[Message]] = {"logs": ExportLogsServiceRequest, "metrics": ExportMetricsServiceRequest}
_HEX_IDS = ("traceId", "spanId")


class UnsupportedMediaType(CorralError):
    status, code = 415, "unsupported_media_type"


def encoding_of(content_type: str | None) -> Encoding:
    """The request's encoding from its Content-Type; OTLP/HTTP has exactly two."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _ACCEPTED:
        raise UnsupportedMediaType(
            f"OTLP/HTTP bodies are application/x-protobuf or application/json, not {media or 'unlabelled'!r}; "
            "set OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or http/json")
    return _ACCEPTED[media]  # type: ignore[return-value]


def answer_encoding(content_type: str | None) -> Encoding:
    """The encoding to answer in: the request's, or JSON when it had none Corral reads."""
    try:
        return encoding_of(content_type)
    except UnsupportedMediaType:
        return "json"


def inflate(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding (none, gzip or deflate), never more than `limit`
    bytes: a small compressed body that would inflate past it is refused as it is read."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; use gzip or none")
    window = zlib.MAX_WBITS | (16 if coding == "gzip" else 0)
    output, rest = bytearray(), body
    try:
        while rest:  # gzip allows several members one after the other
            decompressor = zlib.decompressobj(window)
            output += decompressor.decompress(rest, limit + 1 - len(output))
            if len(output) > limit:
                raise PayloadTooLarge(f"the body inflates to more than this server accepts ({limit} bytes)")
            if not decompressor.eof:
                raise InvalidRequest(f"the {coding} body is truncated")
            rest = decompressor.unused_data if coding == "gzip" else b""
    except zlib.error as error:
        raise InvalidRequest(f"the body is not valid {coding}: {error}") from None
    return bytes(output)


def decode(signal: Signal, payload: bytes, encoding: Encoding) -> Message:
    """The Export{Logs,Metrics}ServiceRequest a body holds; InvalidRequest saying what is wrong."""
    request = _REQUESTS[signal]()
    if encoding == "protobuf":
        try:
            request.ParseFromString(payload)
        except (DecodeError, RecursionError) as error:
            raise InvalidRequest(f"the body is not a valid protobuf Export{signal.title()}ServiceRequest: "
                                 f"{error or 'malformed'}") from None
        return request
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidRequest(f"an OTLP/JSON body is an object with resource{signal.title()}, "
                             f"not {type(document).__name__}")
    try:
        json_format.ParseDict(_base64_ids(document), request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as error:
        raise InvalidRequest(f"the body is not a valid OTLP/JSON Export{signal.title()}ServiceRequest: "
                             f"{str(error)[:300]}") from None
    return request


def _base64_ids(document: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON writes trace and span ids in hex where protobuf's JSON mapping expects base64:
    rewrite them in place (walking without recursion, so depth cannot exhaust the stack)."""
    pending: list[Any] = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for name, value in item.items():
                if name in _HEX_IDS and isinstance(value, str):
                    try:
                        item[name] = base64.b64encode(bytes.fromhex(value)).decode()
                    except ValueError:
                        raise InvalidRequest(f"{name} {value[:40]!r} is not hexadecimal") from None
                elif isinstance(value, (dict, list)):
                    pending.append(value)
    return document


def export_response(signal: Signal, rejected: int, message: str, encoding: Encoding) -> bytes:
    """Export{Logs,Metrics}ServiceResponse: empty on full success; `partial_success` naming how
    many records were rejected and why otherwise."""
    if signal == "logs":
        response: Message = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected,
                                                                       error_message=message))
    else:
        response = ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.CopyFrom(ExportMetricsPartialSuccess(rejected_data_points=rejected,
                                                                          error_message=message))
    return _encode(response, encoding)


def _status_class() -> type[Message]:
    """google.rpc.Status (googleapis' rpc/status.proto), declared with the two fields Corral fills,
    in a pool of its own: its bytes and JSON are those of the full message, and no package beyond
    protobuf is needed for it. `details` (field 3) is never sent."""
    file = descriptor_pb2.FileDescriptorProto(name="corral/rpc_status.proto", package="google.rpc", syntax="proto3")
    status = file.message_type.add(name="Status")
    status.field.add(name="code", json_name="code", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                     label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    status.field.add(name="message", json_name="message", number=2,
                     type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                     label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


Status = _status_class()
# gRPC codes for the HTTP statuses Corral answers; OTLP clients go by the HTTP status alone.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 413: 8, 415: 3, 422: 3, 429: 8, 500: 13, 503: 14}


def status_body(http_status: int, message: str, encoding: Encoding) -> bytes:
    """The body of an OTLP failure: a google.rpc.Status with a message a person can act on."""
    return _encode(Status(code=_GRPC_CODES.get(http_status, 2), message=message), encoding)


def _encode(message: Message, encoding: Encoding) -> bytes:
    if encoding == "protobuf":
        return message.SerializeToString()
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
