"""Reading an uploaded image: multipart field ``image`` or the raw body, within a size limit."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile

from edge.api.errors import ApiError

RAW_TYPES = {"image/jpeg", "image/png", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/tif",
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
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        body = await read_limited_body(request, limit + 64 * 1024)
        request._body = body  # let Starlette's form parser reuse what was read
        try:
            form = await request.form(max_files=1, max_fields=16, max_part_size=limit)
        except Exception as exc:  # Starlette raises several types for a malformed form
            raise ApiError(400, "malformed_multipart", f"the multipart form cannot be parsed: {exc}") from exc
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise ApiError(400, "missing_image", "the multipart form has no file field named 'image'")
        data = await image.read()
        if len(data) > limit:
            raise ApiError(413, "too_large", f"the image exceeds the limit of {limit} bytes")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return Upload(data, fields)
    if content_type in RAW_TYPES or content_type == "":
        return Upload(await read_limited_body(request, limit))
    raise ApiError(415, "unsupported_media_type",
                   f"content type '{content_type}' is not accepted: send multipart/form-data with a field 'image', "
                   "or the image itself as image/jpeg, image/png, image/bmp, image/tiff or application/octet-stream")
