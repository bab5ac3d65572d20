# syntax=docker/dockerfile:1
# Build stage: the release binary, linked against glibc.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml build.rs ./
COPY src ./src
COPY migrations ./migrations
# The workspace manifest names the tool crates; only the server is built.
COPY tools ./tools
RUN cargo build --release --locked --bin atoms-auth \
    && strip target/release/atoms-auth

# Runtime stage: distroless (glibc, libgcc, CA certificates, no shell) with the stripped
# binary, about 45 MB in all. The binary is its own health check client.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/atoms-auth /usr/local/bin/atoms-auth
USER 65532
WORKDIR /var/lib/atoms-auth
ENV ATOMS_AUTH_LISTEN=0.0.0.0:8080 \
    ATOMS_AUTH_DATABASE_URL=sqlite:///var/lib/atoms-auth/atoms-auth.db?mode=rwc \
    ATOMS_AUTH_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/atoms-auth"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["atoms-auth", "health"]
ENTRYPOINT ["atoms-auth"]
CMD ["serve"]
