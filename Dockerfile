# FER Lab app image (CPU). Not built on the development machines (no Docker there); see README.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FER_RUNS_DIR=/data/runs \
    FER_CACHE_DIR=/data/cache

WORKDIR /app

# Dependencies first so the layer is reused when only code changes. torch/torchvision first, exactly pinned.
COPY requirements.txt ./
RUN pip install $(grep -E '^(torch|torchvision)==' requirements.txt) \
    && pip install -r requirements.txt

RUN useradd --create-home --uid 1000 fer \
    && mkdir -p /data/runs /data/cache \
    && chown -R fer:fer /data /app

COPY --chown=fer:fer . .
RUN pip install --no-deps -e .

USER fer
VOLUME ["/data/runs", "/data/cache"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import sys, urllib.request; \
r = urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4); sys.exit(0 if r.status == 200 else 1)"

CMD ["streamlit", "run", "app/Home.py", "--server.address", "0.0.0.0", "--server.port", "8501"]
