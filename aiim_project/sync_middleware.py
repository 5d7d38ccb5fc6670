"""Django's and django-prometheus' middleware, declared sync-only.

Under ASGI, Django runs a `MiddlewareMixin` middleware that says it is async-capable by
hopping to the worker thread and back for each of its `process_request` and
`process_response`: about fifteen thread hops per REST request with this stack. Declared
sync-only, consecutive middleware run as one block in the worker thread, together with the
(sync) DRF view. Behaviour is unchanged; the rest benchmark went from 167 to 226 posts/s
(bench/RESULTS.md).
"""

from __future__ import annotations

from corsheaders import middleware as cors
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import clickjacking, common, csrf, security
from django_prometheus import middleware as prometheus


def _sync_only(cls: type) -> type:
    return type(cls.__name__, (cls,), {"async_capable": False, "__module__": __name__, "__doc__": cls.__doc__})


CorsMiddleware = _sync_only(cors.CorsMiddleware)
PrometheusBeforeMiddleware = _sync_only(prometheus.PrometheusBeforeMiddleware)
SecurityMiddleware = _sync_only(security.SecurityMiddleware)
SessionMiddleware = _sync_only(sessions.SessionMiddleware)
CommonMiddleware = _sync_only(common.CommonMiddleware)
CsrfViewMiddleware = _sync_only(csrf.CsrfViewMiddleware)
AuthenticationMiddleware = _sync_only(auth.AuthenticationMiddleware)
MessageMiddleware = _sync_only(messages.MessageMiddleware)
XFrameOptionsMiddleware = _sync_only(clickjacking.XFrameOptionsMiddleware)
PrometheusAfterMiddleware = _sync_only(prometheus.PrometheusAfterMiddleware)
