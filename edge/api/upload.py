"""Reading an uploaded image: multipart field ``image`` or the raw body, within a size limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from edge.api.errors import ApiError
from edge.config import MULTIPART_ALLOWANCE

AUDIO_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream"}
RAW_IMAGE_TYPES = {"image/jpeg", "image/png", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/tif",
             "application/octet-stream"}


@dataclass
class Upload:
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the upload is {int(declared)} bytes; the limit is {limit} bytes "
                                         "(api.max_upload_mb in the station config)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the upload exceeds the limit of {limit} bytes "
                                             "(api.max_upload_mb in the station config)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_image_upload(request: Request, limit: int) -> Upload:
    return await read_upload(request, limit, "image", RAW_IMAGE_TYPES, "image/jpeg, image/png, image/bmp, image/tiff")


async def read_upload(request: Request, limit: int, field_name: str, raw_types: set[str], described: str) -> Upload:
    """The file in multipart field ``field_name``, or the raw body if its content type is in ``raw_types``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        body = await read_limited_body(request, limit + MULTIPART_ALLOWANCE)
        request._body = body  # let Starlette's form parser reuse what was read
        try:
            form = await request.form(max_files=1, max_fields=16, max_part_size=limit)
        except Exception as exc:  # Starlette raises several types for a malformed form
            raise ApiError(400, "malformed_multipart", f"the multipart form cannot be parsed: {exc}") from exc
        upload = form.get(field_name)
        if not isinstance(upload, UploadFile):
            raise ApiError(400, f"missing_{field_name}", f"the multipart form has no file field named '{field_name}'")
        data = await upload.read()
        if len(data) > limit:
            raise ApiError(413, "too_large", f"the {field_name} exceeds the limit of {limit} bytes")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return Upload(data, fields)
    if content_type in raw_types or content_type == "":
        return Upload(await read_limited_body(request, limit))
    raise ApiError(415, "unsupported_media_type",
                   f"content type '{content_type}' is not accepted: send multipart/form-data with a field "
                   f"'{field_name}', or the file itself as {described} or application/octet-stream")


def upload_body(file_field: str, raw_types: set[str], text_fields: dict[str, str], pattern: str) -> dict[str, Any]:
    """The OpenAPI request body of an upload route (read by hand, so FastAPI cannot infer it): a multipart
    form with the file and the part's text fields, or the file itself as the raw body."""
    properties: dict[str, Any] = {file_field: {"type": "string", "format": "binary", "description": "The file."}}
    for name, description in text_fields.items():
        properties[name] = {"type": "string", "pattern": pattern, "description": description}
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": [file_field]}},
    }
    for media_type in sorted(raw_types):
        content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}
