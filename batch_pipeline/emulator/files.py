"""How a provider's Files API looks behind Bifrost: the ids it mints, the file object it answers,
which files a list shows and whether content can be downloaded. The OpenAI form (`file-` ids,
downloadable) is the base; each provider module subclasses it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_pipeline.emulator.errors import ApiError, openai_not_found
from batch_pipeline.emulator.store import FileRecord, Store, new_id


class ProviderFiles:
    """OpenAI's Files API (openai, azure): `file-` ids, purpose echoed, content downloadable."""

    storage_backend = "api"

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def upload_id(self, filename: str, fields: Mapping[str, str]) -> str:
        """The id a new upload gets; `fields` are the other form fields (buckets, prefixes)."""
        return new_id("file-")

    def upload_purpose(self, purpose: str) -> str:
        """The purpose stored for an upload (Anthropic forces `batch`)."""
        return purpose

    def stored_id(self, wire_id: str) -> str:
        """The stored id of an id a client sent (Vertex's ids travel base64url-encoded)."""
        return wire_id

    def wire_id(self, file_id: str) -> str:
        """The id as clients see it."""
        return file_id

    def view(
        self, record: FileRecord, *, listing: bool = False, uploaded: bool = False
    ) -> dict[str, Any]:
        """The file object of an upload (`uploaded`) or retrieve answer, or of a list item."""
        body: dict[str, Any] = {
            "id": self.wire_id(record.id),
            "object": "file",
            "bytes": record.bytes,
            "created_at": record.created_at,
            "filename": record.filename,
            "purpose": record.purpose,
            "status": "processed",
        }
        if not listing:
            body["storage_backend"] = self.storage_backend
        return body

    def listing(self, store: Store, query: Mapping[str, str]) -> list[FileRecord]:
        """The files a list shows, newest first."""
        return store.provider_files(self.provider)

    def find(self, store: Store, file_id: str) -> FileRecord | None:
        """The live file a path id names."""
        return store.live_file(self.stored_id(file_id), self.provider)

    def refuse_content(self, file_id: str) -> None:
        """Raise when the provider serves no content download."""

    def not_found(self, file_id: str) -> ApiError:
        """The provider's 404 for an unknown file."""
        return openai_not_found(f"No such File object: {file_id}")
