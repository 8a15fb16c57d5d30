"""A Django project in one module for tests/e2e/test_django.py, served through Django's own
ASGI handler (`django.core.asgi.get_asgi_application`), which runs each view beside a task
that waits in `receive()` for http.disconnect and cancels the response when it comes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-" + "k" * 40,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    FILE_UPLOAD_MAX_MEMORY_SIZE=1 << 20,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402 - after settings
from django.http import (  # noqa: E402
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path  # noqa: E402


def piece(i: int, size: int) -> bytes:
    """The i-th piece of a streamed body: its number, then filler to `size` bytes."""
    head = b"%d:" % i
    return head + b"z" * max(size - len(head), 0)


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello from django")


def numbers(request: HttpRequest) -> tuple[int, int]:
    return int(request.GET.get("n", "200")), int(request.GET.get("size", "16"))


def astream(request: HttpRequest) -> StreamingHttpResponse:
    n, size = numbers(request)

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(n):
            yield piece(i, size)

    return StreamingHttpResponse(pieces(), content_type="application/octet-stream")


def upload(request: HttpRequest) -> JsonResponse:
    files = {}
    for name, f in request.FILES.items():
        digest = hashlib.sha256()
        for chunk in f.chunks():
            digest.update(chunk)
        files[name] = [f.size, digest.hexdigest()]
    return JsonResponse({"files": files, "fields": dict(request.POST)})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def lines(request: HttpRequest) -> StreamingHttpResponse:
    n, _ = numbers(request)

    def gen() -> Iterator[str]:
        for i in range(n):
            yield f"line {i}\n"

    return StreamingHttpResponse(gen(), content_type="text/plain")


urlpatterns = [
    path("", index),
    path("astream", astream),
    path("lines", lines),
    path("upload", upload),
    path("boom", boom),
]

application = get_asgi_application()
