"""Bifrost's conversions for Google batch items, shared by the Gemini and Vertex providers:
`ToGeminiBatchGenerateContentRequest` (an inline body to a GenerateContentRequest) and the
flattened result body the Gemini provider makes of a GenerateContentResponse."""

from __future__ import annotations

from typing import Any

# The only keys Bifrost's GeminiBatchGenerateContentRequest keeps from a body.
NATIVE_KEYS = ("contents", "generationConfig", "safetySettings", "systemInstruction")
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"


def _parts(content: Any) -> list[dict[str, Any]]:
    """Gemini parts of an OpenAI message content (a string or text parts; others dropped)."""
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, list):
        return [
            {"text": part["text"]}
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
    return []


def to_gemini_request(body: Any) -> dict[str, Any]:
    """Bifrost's inline conversion: keep the native keys, then `messages` become `contents`
    (assistant -> model) and system/developer messages `systemInstruction`. OpenAI parameters
    (`max_tokens`, `temperature`, `response_format`, `tools`...) are not mapped."""
    if not isinstance(body, dict):
        return {}
    request = {key: body[key] for key in NATIVE_KEYS if key in body}
    messages = body.get("messages")
    if isinstance(messages, list):
        contents: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            if role in ("system", "developer"):
                system.extend(_parts(message.get("content")))
            elif role in ("user", "assistant"):
                gemini_role = "model" if role == "assistant" else "user"
                contents.append({"role": gemini_role, "parts": _parts(message.get("content"))})
        request["contents"] = contents
        if system:
            request["systemInstruction"] = {"parts": system}
    return request


def flatten_response(response: dict[str, Any]) -> dict[str, Any]:
    """The Gemini provider's result body: concatenated text of the first candidate, its finish
    reason and the usage in OpenAI's names; everything else is dropped."""
    body: dict[str, Any] = {}
    candidates = response.get("candidates") or []
    if candidates:
        first = candidates[0]
        parts = (first.get("content") or {}).get("parts") or []
        texts = [part["text"] for part in parts if isinstance(part.get("text"), str)]
        if texts:
            body["text"] = "".join(texts)
        body["finish_reason"] = first.get("finishReason", "")
    usage_metadata = response.get("usageMetadata")
    if isinstance(usage_metadata, dict):
        usage: dict[str, Any] = {
            "prompt_tokens": usage_metadata.get("promptTokenCount", 0),
            "completion_tokens": usage_metadata.get("candidatesTokenCount", 0),
            "total_tokens": usage_metadata.get("totalTokenCount", 0),
        }
        cached = usage_metadata.get("cachedContentTokenCount", 0)
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        body["usage"] = usage
    return body
