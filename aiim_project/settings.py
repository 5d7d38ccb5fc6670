"""AIIM settings: every knob is read from the environment here, typed, and nowhere else.

`env.example` at the project root documents each variable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import environ
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG: bool = env.bool("DEBUG", default=True)

# A production deployment (DEBUG off) must bring its own secrets; the development
# defaults below exist only so a newcomer can start the service with no set-up.
_DEV_SECRET = "aiim-insecure-development-secret-change-me-0123456789"


def _secret(name: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return _DEV_SECRET
    raise ImproperlyConfigured(
        f"{name} is not set. With DEBUG off AIIM refuses to start without it: "
        f"export {name}=<a long random string> (see env.example)."
    )


SECRET_KEY: str = _secret("SECRET_KEY")
JWT_SECRET: str = _secret("JWT_SECRET")
JWT_ALGORITHM: str = env.str("JWT_ALGORITHM", default="HS256")
# PEM public key for RS256/ES256 tokens issued by an external identity provider.
JWT_PUBLIC_KEY: str = env.str("JWT_PUBLIC_KEY", multiline=True, default="")
JWT_DEFAULT_TENANT = "default"

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PORT: int = env.int("PORT", default=8083)

REDIS_URL: str = env.str("REDIS_URL", default="")
REQUIRE_REDIS: bool = env.bool("REQUIRE_REDIS", default=False)
if REQUIRE_REDIS and not REDIS_URL:
    raise ImproperlyConfigured("REQUIRE_REDIS is on but REDIS_URL is not set.")
# Namespaces channel-layer traffic (Redis pub/sub ignores the database number).
CHANNEL_LAYER_PREFIX: str = env.str("CHANNEL_LAYER_PREFIX", default="aiim")
# Seq counter: Redis INCR when Redis is configured, else the database.
SEQ_BACKEND: str = env.str("SEQ_BACKEND", default="redis" if REDIS_URL else "database")

RATE_LIMIT_PER_SEC: int = env.int("RATE_LIMIT_PER_SEC", default=10)
MAX_MESSAGE_BYTES: int = env.int("MAX_MESSAGE_BYTES", default=64 * 1024)
WS_PING_INTERVAL: float = env.float("WS_PING_INTERVAL", default=20.0)
WS_IDLE_TIMEOUT: float = env.float("WS_IDLE_TIMEOUT", default=60.0)
# Unsent bytes the server holds for one connection before it closes it with 4413.
WS_SEND_BUFFER_BYTES: int = env.int("WS_SEND_BUFFER_BYTES", default=1024 * 1024)
WS_RECOVERY_LIMIT: int = env.int("WS_RECOVERY_LIMIT", default=1000)
# How long a subscription holds an early seq before it reads the gap from the database.
WS_GAP_WAIT_MS: int = env.int("WS_GAP_WAIT_MS", default=50)
# Back-pressure (aiim_project.gateway.fanout_lag): write frames wait while the events this
# process delivers are older than this (0 = off), and are refused (unavailable) after waiting
# WS_FANOUT_WAIT_MS.
WS_FANOUT_LAG_MS: int = env.int("WS_FANOUT_LAG_MS", default=25)
WS_FANOUT_WAIT_MS: int = env.int("WS_FANOUT_WAIT_MS", default=2000)
# Browser Origins allowed on the WebSocket (e.g. https://app.example.com); empty = no check.
# When set, clients that send no Origin header are refused too, unless "*" is listed.
WS_ALLOWED_ORIGINS: list[str] = env.list("WS_ALLOWED_ORIGINS", default=[])
STREAM_IDLE_TIMEOUT: float = env.float("STREAM_IDLE_TIMEOUT", default=60.0)
STREAM_COALESCE_MS: int = env.int("STREAM_COALESCE_MS", default=0)
# Assistants (assistants/, docs/assistants.md). Fernet key(s) for the stored model API keys,
# comma-separated, the first encrypts (rotation); required with DEBUG off once a key is stored.
ASSISTANT_ENCRYPTION_KEY: str = env.str("ASSISTANT_ENCRYPTION_KEY", default="")
if not ASSISTANT_ENCRYPTION_KEY and DEBUG:
    # Development only, so `bash .ci/start` needs no set-up: a Fernet key derived from SECRET_KEY.
    import base64
    import hashlib

    ASSISTANT_ENCRYPTION_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"assistants:" + SECRET_KEY.encode()).digest()).decode()
# "inline": every server process runs queued runs; "worker": only `manage.py run_assistants`.
ASSISTANT_RUNNER: str = env.str("ASSISTANT_RUNNER", default="inline")
if ASSISTANT_RUNNER not in ("inline", "worker"):
    raise ImproperlyConfigured("ASSISTANT_RUNNER must be 'inline' or 'worker'.")
ASSISTANT_CHUNK_MS: int = env.int("ASSISTANT_CHUNK_MS", default=50)
ASSISTANT_HISTORY_CHARS: int = env.int("ASSISTANT_HISTORY_CHARS", default=32000)
ASSISTANT_FIRST_TOKEN_TIMEOUT: float = env.float("ASSISTANT_FIRST_TOKEN_TIMEOUT", default=60.0)
ASSISTANT_IDLE_TIMEOUT: float = env.float("ASSISTANT_IDLE_TIMEOUT", default=30.0)
ASSISTANT_MAX_DURATION: float = env.float("ASSISTANT_MAX_DURATION", default=600.0)
ASSISTANT_DAILY_TOKENS: int = env.int("ASSISTANT_DAILY_TOKENS", default=0)
ASSISTANT_LEASE_SECONDS: float = env.float("ASSISTANT_LEASE_SECONDS", default=15.0)
ASSISTANT_POLL_INTERVAL: float = env.float("ASSISTANT_POLL_INTERVAL", default=0.25)
ASSISTANT_RETRY_BACKOFF: float = env.float("ASSISTANT_RETRY_BACKOFF", default=0.5)
ASSISTANT_PROCESS_RUNS: int = env.int("ASSISTANT_PROCESS_RUNS", default=100)
LOG_FORMAT: str = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO")
# Each dependency check of GET /health gives up after this many seconds.
HEALTH_CHECK_TIMEOUT: float = env.float("HEALTH_CHECK_TIMEOUT", default=1.0)
# Threads serving REST requests, one per request in flight (aiim_project.compat.django).
HTTP_THREADS: int = env.int("HTTP_THREADS", default=10)
# POST /api/aiim/messages without Django's request cycle when the request is plain
# (aiim_project.rest_direct); 0 sends every request through the middleware chain.
REST_DIRECT_POST: bool = env.bool("REST_DIRECT_POST", default=True)
# Server-Sent Events streams (aiim_project.gateway.sse): a comment line after this many idle seconds keeps
# proxies from closing the connection and finds clients that have gone.
SSE_HEARTBEAT_SECONDS: float = env.float("SSE_HEARTBEAT_SECONDS", default=15.0)
# Browser origins allowed to call the API from another origin (CORS, django-cors-headers),
# e.g. https://app.example.com; empty = same origin only.
CORS_ALLOWED_ORIGINS: list[str] = env.list("CORS_ALLOWED_ORIGINS", default=[])
# Freeze what start-up made out of the cyclic collector's way (aiim_project.gc_tuning).
GC_FREEZE_AT_START: bool = env.bool("GC_FREEZE_AT_START", default=True)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Swagger UI and ReDoc as pinned static files (no CDN): /docs and /redoc work offline.
    "drf_spectacular_sidecar",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "corsheaders",
    "messaging",
    "receipts",
    "streaming",
    "assistants",
    "aiim_project",
]

# Sync-only copies of the stock middleware (docs/internals.md, "compat/django.py").
MIDDLEWARE = [
    "aiim_project.sync_middleware.PrometheusBeforeMiddleware",
    "aiim_project.http_metrics.HttpMetricsMiddleware",
    "aiim_project.middleware.RequestIdMiddleware",
    # Before anything that can answer: a preflight (OPTIONS) is answered here.
    "aiim_project.sync_middleware.CorsMiddleware",
    "aiim_project.sync_middleware.SecurityMiddleware",
    # /static/ (admin, browsable API, docs assets) from this process: no extra server needed.
    "aiim_project.static_files.StaticFilesMiddleware",
    "aiim_project.sync_middleware.SessionMiddleware",
    "aiim_project.sync_middleware.CommonMiddleware",
    "aiim_project.sync_middleware.CsrfViewMiddleware",
    "aiim_project.sync_middleware.AuthenticationMiddleware",
    "aiim_project.sync_middleware.MessageMiddleware",
    "aiim_project.sync_middleware.XFrameOptionsMiddleware",
    "aiim_project.sync_middleware.PrometheusAfterMiddleware",
]
# The REST API keeps no state between requests: without the admin-only middleware a post
# costs ~5% less CPU (docs/internals.md, "compat/django.py"). A browser's session on the API is
# read by aiim_project.session_auth only when there is no bearer token; static files are never
# under /api/aiim/.
_ADMIN_ONLY_MIDDLEWARE = {
    "SessionMiddleware",
    "CsrfViewMiddleware",
    "AuthenticationMiddleware",
    "MessageMiddleware",
    "StaticFilesMiddleware",
}
API_MIDDLEWARE = [m for m in MIDDLEWARE if m.rsplit(".", 1)[1] not in _ADMIN_ONLY_MIDDLEWARE]

# CORS covers the API only (REST, streams); the admin and docs stay same-origin.
CORS_URLS_REGEX = r"^/api/aiim/.*$"
# The UI message stream's header must be readable by the AI SDK in the browser.
CORS_EXPOSE_HEADERS = ["x-vercel-ai-ui-message-stream", "X-Request-ID"]
CORS_ALLOW_HEADERS = [*cors_default_headers, "last-event-id", "x-request-id"]

ROOT_URLCONF = "aiim_project.urls"
ASGI_APPLICATION = "aiim_project.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "aiim_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the single writer; IMMEDIATE takes the write lock at
    # BEGIN, so two writers queue on busy_timeout instead of failing on lock upgrade.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    # Django's backend with a cheaper pool check (aiim_project/postgres/base.py).
    _db["ENGINE"] = "aiim_project.postgres"
    _db["CONN_MAX_AGE"] = 0  # the pool owns connection reuse
    # Without a check the first requests after a database restart fail; only idle connections
    # are checked (docs/architecture.md, "The PostgreSQL pool check").
    _db["CONN_HEALTH_CHECKS"] = False
    _db["OPTIONS"] = {
        "pool": {
            "min_size": env.int("DB_POOL_MIN", default=2),
            "max_size": env.int("DB_POOL_MAX", default=20),
            "timeout": env.float("DB_POOL_TIMEOUT", default=5.0),
        },
        "connect_timeout": 5,
    }
# Test databases: SQLite tests use a file (not memory) so that Daphne processes started by
# end-to-end tests share it; TEST_DATABASE_NAME lets parallel test runs keep their own.
_test_name = env.str("TEST_DATABASE_NAME", default="")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["TEST"] = {"NAME": str(BASE_DIR / f"{_test_name or 'test_aiim'}.sqlite3")}
elif _test_name:
    _db["TEST"] = {"NAME": _test_name}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis' pub/sub layer (one PUBLISH per group send; the database fills
            # anything lost), recovering from a Redis restart (see the module).
            "BACKEND": "aiim_project.core.layers.RecoveringPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNEL_LAYER_PREFIX},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# Where `manage.py collectstatic` puts the files WhiteNoise (or nginx) serves with DEBUG off.
STATIC_ROOT: str = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# DEBUG on (`bash .ci/start`): WhiteNoise serves straight from the apps, no collectstatic.
# DEBUG off: collectstatic writes content-hashed, pre-compressed copies that WhiteNoise
# serves with a one-year immutable Cache-Control (docs/browser.md).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Finders and autorefresh follow the process's DEBUG, not the runtime setting that the test
# runner switches off: a DEBUG server has no collected files to serve.
WHITENOISE_USE_FINDERS: bool = DEBUG
WHITENOISE_AUTOREFRESH: bool = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    # Bearer first (its 401 challenge is the API's); a browser's login session second
    # (aiim_project.session_auth, /api-auth/login).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "aiim_project.core.auth.JWTPrincipalAuthentication",
        "aiim_project.session_auth.SessionTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["aiim_project.core.ratelimit.UserWriteThrottle"],
    "EXCEPTION_HANDLER": "aiim_project.errors.rest_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # A body without Content-Type is JSON, as the original AIIM read it (docs/migrating.md).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "aiim_project.negotiation.JSONWhenUntyped",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AIIM API",
    "DESCRIPTION": "Instant messaging for AI applications. See docs/protocol.md for the WebSocket contract.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs pages are public: no token needed to read how to get one.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # The contract for programs is the bearer token; the login session is a convenience of
    # the browsable API (docs/browser.md), left out of the schema.
    "AUTHENTICATION_WHITELIST": ["aiim_project.core.auth.JWTPrincipalAuthentication"],
    # Pinned, locally served assets (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No online validator badge: it would send the schema's URL to a third party.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "ENUM_NAME_OVERRIDES": {
        "ConversationTypeEnum": "messaging.models.ConversationType",
        "MessageTypeEnum": "messaging.models.MessageType",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "aiim_project.schema.add_error_responses",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "aiim_project.core.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s%(conn_id)s] %(message)s"},
    },
    "filters": {"context": {"()": "aiim_project.core.logs.ContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": sys.stderr,
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default "django" handler would print a second, unformatted copy of its
        # lines (with DEBUG on): send them through the one console handler instead.
        "django": {"handlers": [], "propagate": True},
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # The model client (assistants): a line per request at INFO, request options at DEBUG.
        "openai": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
    },
}
