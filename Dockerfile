# syntax=docker/dockerfile:1
# Build stage: the release binary, linked against glibc.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin atoms-auth \
    && strip target/release/atoms-auth

# Runtime stage: Debian slim with CA certificates (webhooks over HTTPS) and curl for the
# health check; about 90 MB with the binary.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20250419~deb12u2 curl=7.88.1-10+deb12u15 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/atoms-auth --create-home atoms
COPY --from=build /src/target/release/atoms-auth /usr/local/bin/atoms-auth
USER 10001
WORKDIR /var/lib/atoms-auth
ENV ATOMS_AUTH_LISTEN=0.0.0.0:8080 \
    ATOMS_AUTH_DATABASE_URL=sqlite:///var/lib/atoms-auth/atoms-auth.db?mode=rwc \
    ATOMS_AUTH_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/atoms-auth"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/health/ready"]
ENTRYPOINT ["atoms-auth"]
CMD ["serve"]
