"""The pages' answers for a wrong address and a wrong method: the site's own page with its navigation and what
went wrong, not a bare "Not Found"; the API keeps its JSON error shape (docs/api.md)."""

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

TITLES = {404: "Not found", 405: "Not this way"}


def error_page(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        code = {404: "not_found", 405: "method_not_allowed"}[status]
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    context = {"status": status, "title": TITLES[status], "message": message}
    return render(request, "dashboards/error.html", context, status=status)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's handler404: the reason a view gave (`Http404("no device named …")`), else a plain one."""
    reason = exception.args[0] if isinstance(exception, Http404) and exception.args else ""
    if not isinstance(reason, str) or not reason or reason.startswith("No ") and "matches the given query" in reason:
        reason = f"there is nothing at {request.path}"
    return error_page(request, 404, reason)
