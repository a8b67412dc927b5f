# syntax=docker/dockerfile:1
# molgen CPU image:  docker build -t molgen .   then   docker run --rm molgen --help
# Optional inputs in the build context (see docs/DOCKER.md): wheels/*.whl (used with pip
# --find-links, e.g. for an air-gapped build) and extra-ca.pem (an extra CA for a network that
# intercepts TLS). Neither ends up in the image: both stay in the discarded build stage.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# Build stage: a virtual environment with molgen's dependencies, installed as scripts/install.sh
# does (torch first, pinned; then the package's dependencies; then guacamol without its deps).
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The CPU wheel index: PyPI's Linux torch wheels are CUDA builds that pull GBs of NVIDIA libraries.
# Set it empty when wheels/ holds the torch wheel, or to a CUDA index for a GPU image.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG GUACAMOL_VERSION=0.5.5
# pip's own settings, unset unless given: PIP_NO_INDEX=1 for an air-gapped build from wheels/ only,
# PIP_INDEX_URL for a package mirror.
ARG PIP_NO_INDEX
ARG PIP_INDEX_URL

ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/opt/offline \
    PIP_CERT=/opt/offline/ca-bundle.pem \
    SSL_CERT_FILE=/opt/offline/ca-bundle.pem

# The [x] globs make extra-ca.pem and wheels/ optional: a pattern that matches nothing is
# accepted (classic builder and BuildKit) because pyproject.toml always matches. The wheels land
# flat in /opt/offline, next to pyproject.toml, which pip's --find-links ignores.
COPY pyproject.toml extra-ca.pe[m] wheel[s] /opt/offline/

# pip trusts the base's CA bundle plus the optional extra CA; the venv's pip knows where the base
# bundle is when the base image has no system one.
RUN python3 -m venv /opt/venv \
    && base_bundle=/etc/ssl/certs/ca-certificates.crt \
    && if [ ! -s "$base_bundle" ]; then \
         base_bundle="$(python -c 'from pip._vendor import certifi; print(certifi.where())')"; \
       fi \
    && cat "$base_bundle" > /opt/offline/ca-bundle.pem \
    && if [ -s /opt/offline/extra-ca.pem ]; then \
         cat /opt/offline/extra-ca.pem >> /opt/offline/ca-bundle.pem; \
       fi

RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --extra-index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
    else \
      pip install "torch==${TORCH_VERSION}"; \
    fi

# The declared dependencies get their own layer so that editing the code does not reinstall them.
# The build-system requirements (setuptools, wheel) come along so that the final stage can install
# molgen itself without any network.
RUN python -c "import tomllib; p = tomllib.load(open('/opt/offline/pyproject.toml', 'rb')); print('\n'.join(p['project']['dependencies'] + p['build-system']['requires']))" > /opt/offline/requirements.txt \
    && pip install -r /opt/offline/requirements.txt \
    && pip install --no-deps "guacamol==${GUACAMOL_VERSION}"

# ---------------------------------------------------------------------------------------------
# Runtime stage: the venv, the code, the bundled data; runs as an unprivileged user.
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ARG MOLGEN_UID=1000

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# rdkit's drawing code (molecule grids) links against X libraries that its wheel does not ship.
# Skipped when the base already has them (an air-gapped build without a Debian mirror needs such a
# base). Not version-pinned: the versions are whatever the chosen base's Debian release carries.
# hadolint ignore=DL3008
RUN if ! { ldconfig -p | grep libXrender.so.1 >/dev/null && ldconfig -p | grep libXext.so.6 >/dev/null; }; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libx11-6 libxext6 libxrender1 \
      && apt-get clean \
      && rm -rf /var/lib/apt/lists/*; \
    fi

RUN groupadd --gid "${MOLGEN_UID}" molgen \
    && useradd --no-log-init --create-home --uid "${MOLGEN_UID}" --gid "${MOLGEN_UID}" molgen \
    && mkdir -p /work \
    && chown molgen:molgen /work

COPY --from=build /opt/venv /opt/venv
# molgen finds its data next to the package (DATA_DIR = <source>/data), so it is installed editable
# from /opt/molgen, as scripts/install.sh does in a checkout.
COPY data/ /opt/molgen/data/
COPY pyproject.toml README.m[d] /opt/molgen/
COPY molgen/ /opt/molgen/molgen/
RUN pip install --no-deps --no-build-isolation --no-index -e /opt/molgen \
    && python -m compileall -q /opt/molgen/molgen

# Numeric, so that platforms that check for a non-root user can see it is one.
USER ${MOLGEN_UID}:${MOLGEN_UID}
WORKDIR /work
# Fails the build if the entry point or molecule drawing does not load; warms matplotlib's font cache.
RUN molgen --version && python -c "import matplotlib.font_manager, rdkit.Chem.Draw"

ENTRYPOINT ["molgen"]
CMD ["--help"]
