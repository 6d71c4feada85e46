# syntax=docker/dockerfile:1
# metarec: one image for the worker, the trainer and the replay/tail tools (`metarec <command>`).
#   docker build -t metarec:0.1.0 .
# TORCH_INDEX_URL: torch's CPU-only wheels keep the image small; set it empty to use PyPI's default wheel.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/metarec
ENV PATH=/opt/metarec/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md* ./
COPY shared ./shared
COPY services ./services
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 metarec \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/metarec --create-home --shell /usr/sbin/nologin metarec \
 && mkdir -p /var/lib/metarec/worker /models /data \
 && chown -R 10001:10001 /var/lib/metarec /models /data
COPY --from=build /opt/metarec /opt/metarec
ENV PATH=/opt/metarec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METAREC_DATA_DIR=/var/lib/metarec/worker \
    METAREC_MODEL_DIR=/models/latest
WORKDIR /home/metarec
USER 10001:10001
EXPOSE 6066
EXPOSE 6067
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('METAREC_WEB_PORT', '6066'), timeout=2)"]
ENTRYPOINT ["metarec"]
CMD ["worker"]
