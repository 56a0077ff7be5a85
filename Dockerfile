# Both services from one Dockerfile: `--target items` or `--target timezones`.
#   docker build --target items -t meridian-items .
# Base images are build arguments so a locally made base can stand in (see
# scripts/container-test.sh, which builds and runs these images with podman, offline).
# Builder and runtime move together, on one Debian release (13, trixie): the binaries link
# against the builder's glibc, and one built on a newer glibc than the runtime's fails at
# start ("GLIBC_2.xx not found"). distroless cc-debian12 reached its end of life in
# September 2026.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-trixie
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian13:nonroot
# The stage (or image) that provides /out/items, /out/timezones and an empty /out/data:
# `build` compiles them here; a test passes an image holding binaries built outside.
ARG BINARIES=build

FROM ${RUST_IMAGE} AS chef
# cargo-chef caches the dependency build in its own layer, rebuilt only when Cargo.lock changes.
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The dependencies' build settings (LIBSQLITE3_FLAGS) apply to the cached layer too.
COPY .cargo .cargo
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
ARG MERIDIAN_GIT_COMMIT=unknown
ENV MERIDIAN_GIT_COMMIT=${MERIDIAN_GIT_COMMIT}
RUN cargo build --release --locked --bin items --bin timezones \
    && mkdir -p /out/data && cp target/release/items target/release/timezones /out/

# checkov:skip=CKV_DOCKER_7: BINARIES names a build stage (or a local test image), not a registry tag
FROM ${BINARIES} AS binaries

# What both images share: the runtime base, the labels that are not per service, and the
# unprivileged user (distroless' nonroot, uid 65532).
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG SOURCE_URL=unknown
ARG MERIDIAN_GIT_COMMIT=unknown
LABEL org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${MERIDIAN_GIT_COMMIT}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532

FROM runtime AS items
LABEL org.opencontainers.image.title="meridian-items" \
      org.opencontainers.image.description="Items CRUD API of the meridian reference system"
COPY --from=binaries /out/items /usr/local/bin/items
# Distroless has no shell to mkdir with, and its / is root's: /data comes from the binaries
# stage, owned by the user items runs as. A new volume starts as a copy of it, owner included;
# a tmpfs only takes its mode, so mount one with uid=65532,gid=65532.
COPY --from=binaries --chown=65532:65532 /out/data /data
VOLUME /data
ENV BIND_ADDR=0.0.0.0:8080 \
    METRICS_ADDR=0.0.0.0:9464 \
    DATABASE_URL=sqlite:///data/items.db
EXPOSE 8080 9464
# The probe allows itself 2 s to connect, 2 s to send and 2 s to read (lifecycle.rs):
# the timeout is longer, so a slow answer is reported by the probe, not cut short.
HEALTHCHECK --interval=10s --timeout=8s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/items", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/items"]

FROM runtime AS timezones
LABEL org.opencontainers.image.title="meridian-timezones" \
      org.opencontainers.image.description="IANA time zone API of the meridian reference system"
COPY --from=binaries /out/timezones /usr/local/bin/timezones
ENV BIND_ADDR=0.0.0.0:8081 \
    METRICS_ADDR=0.0.0.0:9465
EXPOSE 8081 9465
# The same probe, and timeout, as items'.
HEALTHCHECK --interval=10s --timeout=8s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/timezones", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/timezones"]
