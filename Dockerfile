# AIIM: one Daphne process per container; scale with replicas (docker-compose.prod.yml).
#   build:    docker build -t aiim .
#   migrate:  docker run --rm --env-file .env aiim python manage.py migrate --noinput
#   serve:    docker run --env-file .env -p 8083:8083 aiim
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8083

WORKDIR /app

# Runtime dependencies only: requirements.txt lists them above its "# Tests" line.
COPY requirements.txt .
RUN sed '/^# Tests/,$d' requirements.txt > /tmp/runtime.txt \
    && pip install -r /tmp/runtime.txt \
    && rm /tmp/runtime.txt

# A fixed numeric uid, named by number below: a host or orchestrator (runAsNonRoot) can
# check it without the image's /etc/passwd (hadolint DL3066).
RUN groupadd --system --gid 10001 aiim \
    && useradd --system --uid 10001 --gid aiim --no-create-home --home-dir /app aiim

COPY --chown=aiim:aiim . .

# Admin, browsable API and docs assets: content-hashed, compressed copies in /app/staticfiles,
# served by the Daphne process (WhiteNoise) or by nginx (docs/deploy/nginx.conf, docs/browser.md).
RUN DEBUG=false SECRET_KEY=collectstatic JWT_SECRET=collectstatic python manage.py collectstatic --noinput

USER 10001:10001
EXPOSE 8083

# Liveness only: a database or Redis outage is reported by /health, and restarting the
# container would not fix it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=15s --retries=3 CMD ["python", "aiim_project/healthcheck.py"]

# Migrations are a separate one-shot step (`python manage.py migrate --noinput`), never run
# here: several replicas starting at once must not race to migrate.
# --verbosity 0 turns off Daphne's access log, which prints query strings (a token could be
# in one); the request-id middleware logs each request instead, path only.
CMD ["sh", "-c", "exec daphne --bind 0.0.0.0 --port \"$PORT\" --proxy-headers --verbosity 0 aiim_project.asgi:application"]
