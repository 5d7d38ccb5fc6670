"""Django's and django-prometheus' middleware, declared sync-only (why: `compat.django`).
MIDDLEWARE and API_MIDDLEWARE name these classes."""

from corsheaders import middleware as cors
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import clickjacking, common, csrf, security
from django_prometheus import middleware as prometheus

from aiim_project.compat.django import sync_only

CorsMiddleware = sync_only(cors.CorsMiddleware)
PrometheusBeforeMiddleware = sync_only(prometheus.PrometheusBeforeMiddleware)
SecurityMiddleware = sync_only(security.SecurityMiddleware)
SessionMiddleware = sync_only(sessions.SessionMiddleware)
CommonMiddleware = sync_only(common.CommonMiddleware)
CsrfViewMiddleware = sync_only(csrf.CsrfViewMiddleware)
AuthenticationMiddleware = sync_only(auth.AuthenticationMiddleware)
MessageMiddleware = sync_only(messages.MessageMiddleware)
XFrameOptionsMiddleware = sync_only(clickjacking.XFrameOptionsMiddleware)
PrometheusAfterMiddleware = sync_only(prometheus.PrometheusAfterMiddleware)
