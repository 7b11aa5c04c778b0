# One image for InferWatch's Python services in docker-compose.yml: the model server, the
# gateway, the demo traffic (inferwatch-load) and the alert webhook receiver.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch first, from the CPU index: any looser spec pulls a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY model_server ./model_server
COPY gateway ./gateway
COPY otel ./otel
COPY monitoring ./monitoring
COPY loadgen ./loadgen
RUN pip install . \
    && useradd --uid 10001 --home-dir /app --no-create-home inferwatch \
    && mkdir -p /models && chown inferwatch /models

USER inferwatch
EXPOSE 8000 8001 9464 9465 9099
CMD ["inferwatch-model-server", "--host", "0.0.0.0", "--model-repository", "/models"]
