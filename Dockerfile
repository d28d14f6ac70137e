# The hub image: one codebase for the web process (`serve`) and the MQTT bridge (`mqtt_bridge`).
# What it holds is what `pip install .` installs (pyproject.toml decides; .dockerignore keeps the build
# context small): the same Python major as CI, no checkout, a non-root user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HUB_VAR_DIR=/var/lib/hub
COPY . /src
RUN pip install --no-cache-dir /src && rm -rf /src \
    && useradd --system --home-dir /var/lib/hub hub && mkdir -p /var/lib/hub && chown hub /var/lib/hub
USER hub
WORKDIR /var/lib/hub
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["telemetry-hub", "serve", "--host", "0.0.0.0", "--port", "8000"]
