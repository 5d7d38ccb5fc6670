from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from aiim_project import health

from aiim_project.errors import json_404

api = [
    path("", include("streaming.urls")),
    path("", include("receipts.urls")),
    path("", include("assistants.urls")),
    path("", include("messaging.urls")),
    # Last: any other path under the API answers with the JSON error body, DEBUG or not.
    re_path(r"", json_404),
]

urlpatterns = [
    path("api/aiim/", include(api)),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("health", health.health, name="health"),
    path("health/live", health.live, name="health-live"),
    path("ws-test", TemplateView.as_view(template_name="ws_test.html"), name="ws-test"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]

handler404 = "aiim_project.errors.json_404"
handler500 = "aiim_project.errors.json_500"
