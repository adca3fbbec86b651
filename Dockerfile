# The load-test suite as an image: `docker run IMAGE headless 10 300 http://product-service:8082`.
# Entrypoint run_tests.sh (same modes and options as on a workstation), default command: the web UI.
FROM python:3.11.11-slim-bookworm

# USE_SYSTEM_PYTHON: run_tests.sh uses the image's python3 instead of building a .venv.
# WEB_HOST=0.0.0.0: the UI must listen on the container's interface to be published with -p; protect it
# (--web-login, a reverse proxy with auth, or publish on 127.0.0.1 only: -p 127.0.0.1:8089:8089).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    USE_SYSTEM_PYTHON=1 \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8089 \
    RESULTS_ROOT=/app/results \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

COPY requirements.txt requirements.lock ./
RUN pip install --no-cache-dir -r requirements.txt -c requirements.lock

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin locust \
    && mkdir -p /app/results \
    && chown 10001:10001 /app/results

# Only what runs: the suite's front doors, the loadsuite package behind them, its configuration, the runner
# script and the reference service (tests/test_docker.py checks this against the imports; .dockerignore keeps the rest out).
COPY *.py config.yaml run_tests.sh ./
COPY loadsuite/ ./loadsuite/
COPY product_service/ ./product_service/

USER 10001:10001
VOLUME ["/app/results"]
EXPOSE 8089

# In UI mode the page must answer; other modes end by themselves (their exit code is the verdict).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; mode = open('/proc/1/cmdline', 'rb').read().split(bytes(1))[:4]; b'ui' in mode and u.urlopen('http://127.0.0.1:' + os.environ.get('WEB_PORT', '8089') + '/', timeout=4)"]

ENTRYPOINT ["./run_tests.sh"]
CMD ["ui"]
