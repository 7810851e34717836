"""Client configuration checked before anything is sent: timeouts, base URL, TLS and credentials.

Plain http is refused for anything but a loopback gateway, because the key would cross the network
in clear text; a base URL carrying user:password is refused because it would leak into reprs.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from batch_pipeline.gateway.errors import GatewayConfigError


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed to connect, to wait for each read/write, and to get a pooled connection."""

    connect: float = 5.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0

    def as_httpx(self) -> httpx.Timeout:
        """The same limits in httpx's form."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def checked_base_url(base_url: str, *, allow_insecure_http: bool) -> httpx.URL:
    """Parse and vet the gateway URL; a trailing `/v1` is dropped since every route adds it."""
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise GatewayConfigError(f"gateway URL {base_url!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise GatewayConfigError(
            f"gateway URL {base_url!r} must look like https://host[:port] (or http://127.0.0.1:port)"
        )
    if url.userinfo:
        raise GatewayConfigError(
            "gateway URL must not contain user:password; pass the key as api_key instead"
        )
    if url.scheme == "http" and not allow_insecure_http and not is_loopback_host(url.host):
        raise GatewayConfigError(
            f"refusing plain http to non-loopback host {url.host!r}: use https, "
            "or allow_insecure_http=True if the network is trusted"
        )
    path = url.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return url.copy_with(path=path + "/", query=None, fragment=None)


def ssl_verification(verify: bool | str) -> ssl.SSLContext | bool:
    """httpx's `verify` value: True/False as given, or a context trusting a CA bundle file/dir."""
    if isinstance(verify, bool):
        return verify
    bundle = Path(verify)
    try:
        if bundle.is_dir():
            return ssl.create_default_context(capath=str(bundle))
        return ssl.create_default_context(cafile=str(bundle))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayConfigError(f"cannot load CA bundle {verify!r}: {exc}") from None


def checked_secret(name: str, value: str | None) -> str | None:
    """A key usable in an HTTP header; the error never repeats the key itself."""
    if value is None:
        return None
    if not value or any(ch.isspace() or not ch.isprintable() or ord(ch) > 126 for ch in value):
        raise GatewayConfigError(
            f"{name} is empty or contains characters not allowed in an HTTP header"
        )
    return value
