from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularJSONAPIView

from aiim_project import banner, docs_pages, health, wiring

urlpatterns = [
    path("api/aiim/", include(wiring.api_urls())),
    path("", banner.index, name="banner"),
    # The browsable API's login (DRF's `rest_framework:login` / `rest_framework:logout` names).
    path("api-auth/", include("aiim_project.browser_login")),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    # The original AIIM (FastAPI) served its schema here; its tooling still looks for it.
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-json"),
    path("docs", docs_pages.swagger_ui, name="swagger-ui"),
    path("redoc", docs_pages.redoc, name="redoc"),
    path("health", health.health, name="health"),
    path("health/live", health.live, name="health-live"),
    path("ws-test", TemplateView.as_view(template_name="ws_test.html"), name="ws-test"),
    # A plain-HTML client of the AI SDK chat endpoints (docs/protocol.md 7.4).
    path("chat-demo", TemplateView.as_view(template_name="chat_demo.html"), name="chat-demo"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]

handler404 = "aiim_project.errors.json_404"
handler500 = "aiim_project.errors.json_500"
