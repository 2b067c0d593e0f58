"""A small HTTP client for the aisc API, used by the CLI's commands.

Where it connects, in order: the AISC_URL / AISC_TOKEN environment variables, then the config
file `aisc login` writes ($AISC_CONFIG or ~/.config/aisc/cli.json, mode 0600), then the default
URL with no token. Every failure becomes an `ApiError` carrying one line fit for the terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
TIMEOUT_S = 30.0


class ApiError(Exception):
    """A request failed. `message` is one line; `status` is the HTTP status, if one came back."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


def config_path() -> Path:
    override = os.environ.get("AISC_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".config" / "aisc" / "cli.json"


def load_config() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ApiError(f"cannot read the CLI config at {path}: {_one_line(str(exc))}") from None
    except RecursionError:  # json's decoder recurses once per level of nesting
        raise ApiError(f"cannot read the CLI config at {path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(f"cannot read the CLI config at {path}: it is not a JSON object")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def save_config(url: str, token: str) -> Path:
    """Write the URL and token where only the user can read them (mode 0600)."""
    path = config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"url": url, "token": token}, f, indent=2)
            f.write("\n")
        os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that existed
    except OSError as exc:
        raise ApiError(f"cannot write the CLI config at {path}: {exc.strerror or exc}") from None
    return path


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None


def resolve_target() -> Target:
    """The server URL and token: environment first, then the saved config, then the default."""
    config: dict[str, str] | None = None

    def from_config(key: str) -> str | None:
        nonlocal config
        if config is None:
            config = load_config()
        return config.get(key) or None

    url = os.environ.get("AISC_URL") or from_config("url") or DEFAULT_URL
    token = os.environ.get("AISC_TOKEN") or from_config("token")
    return Target(url=url, token=token)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_environment(cls) -> Client:
        target = resolve_target()
        return cls(target.url, target.token)

    # -- requests ---------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._decode(self._request("GET", path, params=params))

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._decode(self._request("POST", path, json=dict(body or {})))

    def download(self, path: str, dest: Path, params: Mapping[str, Any] | None = None) -> int:
        """Stream a response body into `dest` (no read timeout between chunks); returns bytes."""
        written = 0
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with (
                self._http(timeout) as http,
                http.stream("GET", self._full(path), params=params) as response,
            ):
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                try:
                    with dest.open("wb") as f:
                        for chunk in response.iter_bytes():
                            f.write(chunk)
                            written += len(chunk)
                except OSError as exc:
                    raise ApiError(f"cannot write {dest}: {exc.strerror or exc}") from None
                except BaseException:
                    dest.unlink(missing_ok=True)  # never leave half a download behind
                    raise
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        return written

    # -- internals --------------------------------------------------------------------------

    def _http(self, timeout: httpx.Timeout | float | None = None) -> httpx.Client:
        headers = {"Accept": "application/json, application/problem+json, text/plain"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.Client(headers=headers, timeout=timeout or self.timeout)

    def _full(self, path: str) -> str:
        return f"{self.url}{API_PREFIX}{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._http() as http:
                response = http.request(method, self._full(path), **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _transport_error(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return ApiError(
                f"the aisc server at {self.url} did not answer within {self.timeout:g} s"
            )
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ApiError(f"{self.url!r} is not a valid server URL (try http://host:8000)")
        if isinstance(exc, httpx.TransportError):
            return ApiError(
                f"cannot reach the aisc server at {self.url} (is `aisc serve` running?)"
            )
        return ApiError(f"request to {self.url} failed: {_one_line(str(exc))}")

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            try:
                return response.json()
            except ValueError:
                raise ApiError(
                    f"the server sent malformed JSON (HTTP {response.status_code})",
                    response.status_code,
                ) from None
        return response.text

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        """Problem details become '<title>: <detail>'; anything else 'HTTP <status>: <body>'."""
        status = response.status_code
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if isinstance(body, dict) and ("title" in body or "detail" in body):
            title = _one_line(str(body.get("title") or f"HTTP {status}"))
            detail = _one_line(str(body.get("detail") or ""))
            return ApiError(f"{title}: {detail}" if detail else title, status)
        text = _one_line(response.text)[:200] or response.reason_phrase
        return ApiError(f"HTTP {status}: {text}", status)
