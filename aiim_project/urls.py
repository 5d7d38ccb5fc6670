from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView

from aiim_project import docs_pages, health

from aiim_project.errors import json_404

api = [
    path("", include("streaming.urls")),
    path("", include("receipts.urls")),
    path("", include("messaging.urls")),
    # Last: any other path under the API answers with the JSON error body, DEBUG or not.
    re_path(r"", json_404),
]

urlpatterns = [
    path("api/aiim/", include(api)),
    # The browsable API's login (DRF's `rest_framework:login` / `rest_framework:logout` names).
    path("api-auth/", include("aiim_project.browser_login")),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", docs_pages.swagger_ui, name="swagger-ui"),
    path("redoc", docs_pages.redoc, name="redoc"),
    path("health", health.health, name="health"),
    path("health/live", health.live, name="health-live"),
    path("ws-test", TemplateView.as_view(template_name="ws_test.html"), name="ws-test"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]

handler404 = "aiim_project.errors.json_404"
handler500 = "aiim_project.errors.json_500"
