# Multi-stage build: compile with the full toolchain, run on a slim Debian as non-root.
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake nasm pkg-config >/dev/null
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY fixtures ./fixtures
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin imgedge

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/imgedge --create-home imgedge
COPY --from=build /src/target/release/imgedge /usr/local/bin/imgedge
USER imgedge
WORKDIR /var/lib/imgedge
ENV IMGEDGE_CDN_ADDR=0.0.0.0:8080 \
    IMGEDGE_API_ADDR=0.0.0.0:8081 \
    IMGEDGE_DATA_DIR=/var/lib/imgedge/data \
    IMGEDGE_LOG_FORMAT=json
EXPOSE 8080 8081
VOLUME ["/var/lib/imgedge/data"]
ENTRYPOINT ["imgedge"]
CMD ["serve"]
