# Sluice service image. Build from a clean clone: docker build -t sluice .
# (Not built on the development machines, which have no Docker; kept in step with scripts/ by hand:
# see the README's "Deploy with Helm".)
#
# The build stage runs the same scripts as a developer machine (Debian bookworm + rustup's Rust 1.95):
# install-toolchain.sh (Debian's rustc-web for the wasm plugins, and the test tools it also installs),
# build-plugins.sh (every component into $SLUICE_PLUGIN_OUT), then the service (`dist`: release with
# whole-program LTO, see Cargo.toml).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends npm curl openssl python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SLUICE_CACHE=/cache CARGO_TARGET_DIR=/cache/target
# The shipped connectors: the build output less the test guests (the same list as `dev.sh serve`).
# The service links only glibc and libgcc_s (no libduckdb: DuckDB is what reads the Parquet, not
# what writes it), so nothing but the binary and the plugins leaves this stage.
RUN bash scripts/install-toolchain.sh && bash scripts/build-plugins.sh \
 && . scripts/env.sh && cargo build --profile dist --locked -p sluice \
 && mkdir -p /out/plugins /out/data \
 && cp /cache/target/dist/sluice /out/ \
 && for f in "$SLUICE_PLUGIN_OUT"/*.wasm; do \
      case "$(basename "$f")" in probe*|synthetic*|hostile*|wrong-world*|extra-import*|bad-manifest*|python-hello*|*-issues.wasm|*-unflushed.wasm) ;; \
        *) cp "$f" /out/plugins/ ;; esac; \
    done \
 && ls /out/plugins/github.wasm /out/plugins/slack.wasm /out/plugins/linear.wasm /out/plugins/hubspot.wasm /out/plugins/http-json.wasm

# The built-in connectors alone, flat at the root: `docker build --target plugins` gives an image to
# extend with further connectors and mount over PLUGINS_DIR as a Kubernetes image volume (the chart's
# connect.plugins.volume.image).
FROM scratch AS plugins
COPY --from=build /out/plugins/ /

# Run time: distroless (glibc, libgcc_s, CA certificates, no shell, no package manager), a numeric
# non-root user. The chart runs it with a read-only root filesystem and emptyDirs for
# /var/lib/sluice (run records), /var/lib/sluice/cache (compiled plugins), /var/lib/sluice/staging, /tmp.
FROM gcr.io/distroless/cc-debian12 AS runtime
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build /out/plugins/ /plugins/
COPY --from=build --chown=10001:10001 /out/data/ /var/lib/sluice/
ENV HOST=0.0.0.0 PORT=8000 PLUGINS_DIR=/plugins SLUICE_DATA_DIR=/var/lib/sluice
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
