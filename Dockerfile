# Multi-stage build: compile in the Rust image, run as a non-root user on Debian slim.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hazgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/hazgate --create-home hazgate
COPY --from=build /src/target/release/hazgate /usr/local/bin/hazgate
COPY config/ /etc/hazgate/
USER hazgate
WORKDIR /var/lib/hazgate
EXPOSE 8080
# /healthz answers while the process serves the API (configure [api] listen on
# 0.0.0.0:8080 and [[api.tokens]] in the mounted site config).
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/hazgate"]
CMD ["run", "--config", "/etc/hazgate/site.toml"]
