"""Routes of /v1/uploads: create, add part (streamed multipart), complete, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Request

from inhouse.api.deps import ProjectDep, ServicesDep
from inhouse.api.multipart import Form, Sink, read_form
from inhouse.errors import InvalidRequest
from inhouse.records import UploadRecord
from inhouse.schemas.uploads import CompleteUploadRequest, CreateUploadRequest, Upload, UploadPart
from inhouse.services.files import ExpiresAfter
from inhouse.services.uploads import PartIntake

router = APIRouter(tags=["uploads"])


async def _upload(services: ServicesDep, project_id: str, rec: UploadRecord) -> Upload:
    return Upload.of(rec, await services.uploads.file_of(project_id, rec))


@router.post("/uploads")
async def create_upload(body: CreateUploadRequest, project: ProjectDep, services: ServicesDep) -> Upload:
    expires = ExpiresAfter(body.expires_after.anchor, body.expires_after.seconds) if body.expires_after else None
    rec = await services.uploads.create(
        project.id,
        filename=body.filename,
        purpose=body.purpose,
        bytes=body.bytes,
        mime_type=body.mime_type,
        expires_after=expires,
    )
    return Upload.of(rec, None)


@router.post("/uploads/{upload_id}/parts")
async def add_upload_part(upload_id: str, request: Request, project: ProjectDep, services: ServicesDep) -> UploadPart:
    limits = services.settings.limits
    # Refuse early, before any byte is read, when the Upload cannot take parts.
    await services.uploads.begin_part(project.id, upload_id)
    intake: PartIntake | None = None

    async def on_file(field: str, name: str | None, form: Form) -> Sink | None:
        nonlocal intake
        if field != "data":
            return None
        if intake is not None:
            raise InvalidRequest("Only one 'data' part may be sent per request.", param="data")
        intake = await services.uploads.begin_part(project.id, upload_id)
        return intake

    await read_form(request, on_file, max_field_bytes=limits.max_form_field_bytes, max_parts=limits.max_form_parts)
    if intake is None:
        raise InvalidRequest("Missing required parameter: 'data'.", param="data")
    return UploadPart.of(await intake.finish())


@router.post("/uploads/{upload_id}/complete")
async def complete_upload(
    upload_id: str, body: CompleteUploadRequest, project: ProjectDep, services: ServicesDep
) -> Upload:
    rec = await services.uploads.complete(project.id, upload_id, body.part_ids, body.md5)
    return await _upload(services, project.id, rec)


@router.post("/uploads/{upload_id}/cancel")
async def cancel_upload(upload_id: str, project: ProjectDep, services: ServicesDep) -> Upload:
    return await _upload(services, project.id, await services.uploads.cancel(project.id, upload_id))
