# Sluice service image. Build: docker build -t sluice .
# The build stage runs the same scripts as a developer machine (Debian bookworm + rustup's Rust).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends npm curl openssl && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SLUICE_CACHE=/cache CARGO_TARGET_DIR=/cache/target
RUN bash scripts/install-toolchain.sh && bash scripts/build-plugins.sh \
 && . scripts/env.sh && cargo build --release -p sluice \
 && mkdir -p /out/plugins \
 && cp /cache/target/release/sluice /out/ \
 && for f in /cache/plugins/*.wasm; do case "$(basename "$f")" in probe*|synthetic*|wrong-world*|extra-import*|bad-manifest*) ;; *) cp "$f" /out/plugins/ ;; esac; done

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/sluice sluice && mkdir -p /var/lib/sluice /plugins && chown sluice /var/lib/sluice
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build /out/plugins/ /plugins/
ENV HOST=0.0.0.0 PORT=8000 PLUGINS_DIR=/plugins SLUICE_DATA_DIR=/var/lib/sluice
USER sluice
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
