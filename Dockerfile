# m365-forwarder container image (multi-stage; the runtime stage is the default target).
#   docker build -t m365-forwarder .
#   docker run --rm --read-only -v m365fwd:/var/lib/m365-forwarder m365-forwarder demo --out /var/lib/m365-forwarder/demo
# The Graph emulator of the compose `demo` profile:
#   docker build --target graph-emulator -t m365-forwarder-graph-emulator .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config cmake make g++ libssl-dev libsasl2-dev zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests/data ./tests/data
RUN cargo build --release --locked --bin m365-forwarder \
 && strip target/release/m365-forwarder \
 && mkdir -p /out/state \
 && chown 65532:65532 /out/state

# The test suite's Graph + login emulator as a server (examples/graph_emulator.rs).
FROM build AS emulator-build
COPY tests/support ./tests/support
COPY examples ./examples
RUN cargo build --release --locked --example graph_emulator \
 && strip target/release/examples/graph_emulator

FROM gcr.io/distroless/cc-debian12:nonroot AS graph-emulator
COPY --from=emulator-build /src/target/release/examples/graph_emulator /usr/local/bin/graph-emulator
USER 65532:65532
EXPOSE 8443
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=5 \
  CMD ["/usr/local/bin/graph-emulator", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/graph-emulator"]

# Runtime: glibc and CA certificates only (distroless, no shell), as the non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/m365-forwarder /usr/local/bin/m365-forwarder
COPY connectors /etc/m365-forwarder/connectors
# Checkpoints, dead-letter file and disk buffers: the only place written, owned by 65532 so a
# fresh named volume mounted here is writable; the root file system can stay read-only.
COPY --from=build --chown=65532:65532 /out/state /var/lib/m365-forwarder
USER 65532:65532
VOLUME ["/var/lib/m365-forwarder"]
EXPOSE 9598
ENV M365FWD_LOG_FORMAT=json
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/m365-forwarder", "healthcheck", "--address", "127.0.0.1:9598", "--path", "/health"]
ENTRYPOINT ["/usr/local/bin/m365-forwarder"]
CMD ["run", "-c", "/etc/m365-forwarder/forwarder.toml"]
