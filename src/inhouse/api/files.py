"""Routes of /v1/files: create (streamed multipart), list, retrieve, delete, content."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.multipart import Form, Sink, read_form
from inhouse.errors import InvalidRequest
from inhouse.schemas.files import DeleteFileResponse, ListFilesResponse, OpenAIFile
from inhouse.services.byte_range import ByteRange
from inhouse.services.files import ExpiresAfter, FileIntake, etag

router = APIRouter(tags=["files"])


def expires_after_of(form: Form) -> ExpiresAfter | None:
    anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        raise InvalidRequest("Missing required parameter: 'expires_after[anchor]'.", param="expires_after[anchor]")
    value = form.integer("expires_after[seconds]")
    if value is None:
        raise InvalidRequest("expires_after[seconds] must be an integer.", param="expires_after[seconds]")
    return ExpiresAfter(anchor, value)


def purpose_of(form: Form) -> str | None:
    # The content was checked for the purpose known when the file arrived; a second, different purpose
    # must not slip past its own checks.
    if len(set(form.fields.get("purpose", []))) > 1:
        raise InvalidRequest("'purpose' was sent more than once, with different values.", param="purpose")
    return form.get("purpose")


@router.post("/files")
async def create_file(request: Request, project: ProjectDep, services: ServicesDep) -> OpenAIFile:
    limits = services.settings.limits
    intake: FileIntake | None = None
    filename: str | None = None

    async def on_file(field: str, name: str | None, form: Form) -> Sink | None:
        nonlocal intake, filename
        if field != "file":
            return None
        if intake is not None:
            raise InvalidRequest("Only one 'file' may be uploaded per request.", param="file")
        # The SDK sends `purpose` before the file, so it is usually known here and the content can
        # be checked while it streams; otherwise FileIntake checks it after.
        intake = services.files.begin_create(project.id, form.get("purpose"))
        filename = name
        return intake

    form = await read_form(request, on_file, max_field_bytes=limits.max_form_field_bytes,
                           max_parts=limits.max_form_parts)
    if intake is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    try:
        purpose, expires = purpose_of(form), expires_after_of(form)
    except BaseException:
        await intake.abort()
        raise
    rec = await intake.finish(filename, purpose, expires)
    return OpenAIFile.of(rec)


@router.get("/files")
async def list_files(
    project: ProjectDep,
    services: ServicesDep,
    purpose: str | None = None,
    limit: Annotated[int, Query()] = 10000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ListFilesResponse:
    page = await services.files.list(project.id, purpose=purpose, after=after, limit=limit, order=order)
    data = [OpenAIFile.of(r) for r in page.items]
    return ListFilesResponse(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, project: ProjectDep, services: ServicesDep) -> OpenAIFile:
    return OpenAIFile.of(await services.files.retrieve(project.id, file_id))


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, project: ProjectDep, services: ServicesDep) -> DeleteFileResponse:
    return DeleteFileResponse(id=await services.files.delete(project.id, file_id), deleted=True)


def content_disposition(filename: str) -> str:
    """An ASCII fallback plus RFC 5987 UTF-8, so no client filename can break the header."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/files/{file_id}/content")
async def download_file(file_id: str, request: Request, project: ProjectDep, services: ServicesDep
                        ) -> StreamingResponse:
    asked = requested_range(request.headers.get("range"), request.headers.get("if-range"))
    rec, span, body = await services.files.content(project.id, file_id, asked)
    headers = {"content-disposition": content_disposition(rec.filename), "accept-ranges": "bytes",
               "etag": etag(rec)}
    status = 200
    if span is None:
        headers["content-length"] = str(rec.bytes)
    else:
        offset, length = span
        headers["content-length"] = str(length)
        headers["content-range"] = f"bytes {offset}-{offset + length - 1}/{rec.bytes}"
        status = 206
    return StreamingResponse(body, status_code=status, media_type="application/octet-stream", headers=headers)


_RANGE = re.compile(r"bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", re.IGNORECASE)


def requested_range(header: str | None, if_range: str | None) -> ByteRange | None:
    """The one byte range a Range header asks for (with If-Range's ETag, if any); None (the whole content) for
    no header, another unit, several ranges or one that does not parse, as RFC 9110 lets a server answer them."""
    m = _RANGE.fullmatch(header or "")
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    condition = None if if_range is None else if_range.strip()
    if first == "":
        return ByteRange(None, suffix=int(last), if_etag=condition)
    if last != "" and int(last) < int(first):
        return None  # an invalid range: ignored, not refused
    return ByteRange(int(first), None if last == "" else int(last), if_etag=condition)
