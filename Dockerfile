# m365-forwarder container image.
#   docker build -t m365-forwarder .
#   docker run --rm --read-only -v m365fwd:/var/lib/m365-forwarder m365-forwarder demo --out /var/lib/m365-forwarder/demo
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config cmake make g++ libssl-dev libsasl2-dev zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests/data ./tests/data
RUN cargo build --release --locked --bin m365-forwarder \
 && strip target/release/m365-forwarder

# Runtime: glibc and CA certificates only, as the non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/m365-forwarder /usr/local/bin/m365-forwarder
COPY connectors /etc/m365-forwarder/connectors
USER 65532:65532
# Checkpoints, dead-letter file and disk buffers; the root file system can stay read-only.
VOLUME ["/var/lib/m365-forwarder"]
EXPOSE 9598
ENV M365FWD_LOG_FORMAT=json
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/m365-forwarder", "healthcheck", "--address", "127.0.0.1:9598", "--path", "/health"]
ENTRYPOINT ["/usr/local/bin/m365-forwarder"]
CMD ["run", "-c", "/etc/m365-forwarder/forwarder.toml"]
