from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

api = [
    path("", include("streaming.urls")),
    path("", include("receipts.urls")),
    path("", include("messaging.urls")),
]

urlpatterns = [
    path("api/aiim/", include(api)),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]

handler404 = "aiim_project.errors.json_404"
handler500 = "aiim_project.errors.json_500"
