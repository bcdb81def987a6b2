# syntax=docker/dockerfile:1
# liqmon — slim, non-root, configured entirely by LIQMON_* environment variables.
#   docker build -t liqmon .
#   docker run --rm -it liqmon demo                      # the bundled demo
#   docker compose up                                    # the service beside Mosquitto
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY feeds ./feeds
COPY alerts ./alerts
COPY liqmon ./liqmon
COPY examples ./examples
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LIQMON_STATE__DIR=/var/lib/liqmon \
    LIQMON_HTTP__HOST=0.0.0.0 \
    LIQMON_HTTP__PORT=9108 \
    LIQMON_LOG__FORMAT=json
RUN useradd --create-home --uid 10001 liqmon \
    && mkdir -p /var/lib/liqmon \
    && chown liqmon:liqmon /var/lib/liqmon
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER liqmon
WORKDIR /home/liqmon
# Snapshot, journal and outbox: keep them across container restarts.
VOLUME ["/var/lib/liqmon"]
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["liqmon", "health", "--port", "9108"]
# SIGTERM (docker stop) drains, snapshots, flushes the outbox and publishes offline;
# give it time (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["liqmon"]
CMD ["run"]
