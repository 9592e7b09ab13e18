# One image for the API, the worker and migrations: `docker compose up` (see README).
# For GPU jobs, base it on a CUDA image with Python 3.11+ and your training stack
# (build arg BASE), e.g. --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime.
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 JOBQUEUE_STATE_DIR=/var/lib/jobqueue
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY jobqueue ./jobqueue
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
COPY examples ./examples
RUN pip install -e '.[nvml]' && useradd --create-home --uid 1000 jobqueue \
    && mkdir -p /var/lib/jobqueue /checkpoints && chown jobqueue /var/lib/jobqueue /checkpoints
USER jobqueue
EXPOSE 8000
CMD ["jobqueue", "api", "--host", "0.0.0.0", "--port", "8000"]
