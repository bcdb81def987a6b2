# syntax=docker/dockerfile:1
# liqmon: a slim, non-root image. Build: docker build -t liqmon .
# Run the demo: docker run --rm -it liqmon demo
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
    PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 liqmon
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER liqmon
WORKDIR /home/liqmon
ENTRYPOINT ["liqmon"]
CMD ["demo"]
