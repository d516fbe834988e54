# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run from a slim Debian with only the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin octp-backend \
    && cp target/release/octp-backend /usr/local/bin/octp-backend

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/octp octp
COPY --from=build /usr/local/bin/octp-backend /usr/local/bin/octp-backend
# Numeric, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as the same uid).
USER 10001:10001
WORKDIR /var/lib/octp
ENV OCTP_BIND=0.0.0.0:7350
EXPOSE 7350
# Ready means the database answers: `healthcheck` GETs /readyz on the port of OCTP_BIND (no curl
# in this image).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["octp-backend", "healthcheck"]
ENTRYPOINT ["octp-backend"]
CMD ["serve"]
