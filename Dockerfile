# Multi-stage build: compile in the Rust image, run as a non-root user on Debian slim.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hazgate

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/hazgate --create-home hazgate
COPY --from=build /src/target/release/hazgate /usr/local/bin/hazgate
COPY config/ /etc/hazgate/
USER hazgate
WORKDIR /var/lib/hazgate
ENTRYPOINT ["/usr/local/bin/hazgate"]
CMD ["check", "--config", "/etc/hazgate/coal-mine.toml"]
