# The hub image: one codebase for the web process (`serve`) and the MQTT bridge (`mqtt_bridge`).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HUB_VAR_DIR=/var/lib/hub
WORKDIR /app
COPY pyproject.toml README.md manage.py ./
COPY core core
COPY hub hub
COPY devices devices
COPY ingest ingest
COPY dashboards dashboards
COPY bridge bridge
COPY alerts alerts
RUN pip install --no-cache-dir . && useradd --system hub && mkdir -p /var/lib/hub && chown hub /var/lib/hub
USER hub
EXPOSE 8000
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
