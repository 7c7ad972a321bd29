# Multi-stage build: compile in the Rust image, run as a non-root user on Debian slim.
#
#   docker build -t hazgate .
#   (podman/buildah: add --format docker; the default OCI format drops the HEALTHCHECK)
#
# The default command runs the gateway on /etc/hazgate/site.toml, which the image does not
# contain (config/*.toml, copied to /etc/hazgate, are examples); without it `run` exits 1
# with "cannot read /etc/hazgate/site.toml". Mount the site's config there, and a volume on
# /var/lib/hazgate (the working directory, owned by the hazgate user) for the store:
#
#   docker run --rm -v "$PWD/site.toml:/etc/hazgate/site.toml:ro" hazgate check --config /etc/hazgate/site.toml
#   docker run -d --name hazgate -p 8080:8080 \
#     -v "$PWD/site.toml:/etc/hazgate/site.toml:ro" -v hazgate-data:/var/lib/hazgate hazgate
#
# The self-contained demo (simulated site, no config, prints fresh tokens):
#
#   docker run --rm -p 127.0.0.1:8080:8080 hazgate demo --listen 0.0.0.0:8080
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
# /healthz answers (plain HTTP, no token) while the process serves the API: `demo` always
# does; `run` only when the site config has [[api.tokens]], on port 8080 without tls_cert.
# To publish the port, [api] listen must be 0.0.0.0:8080 (or HAZGATE__API__LISTEN=0.0.0.0:8080;
# the example configs listen on 127.0.0.1).
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/hazgate"]
CMD ["run", "--config", "/etc/hazgate/site.toml"]
