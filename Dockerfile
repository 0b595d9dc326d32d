# Tollgate's container image: a Debian 12 build stage, then an empty image holding only the
# binary, its config, glibc's loader and libraries, the CA bundle and a passwd entry — no
# shell, no package manager. It runs as uid 65532 and writes nothing, so it works with a
# read-only root file system (sessions in cookies or Redis; a memory store's `state_file`
# needs a writable volume). What it holds is `deploy/image/runtime-files`;
# `scripts/packaging.sh` starts the binary in a root built from the same list (README,
# "Container image and Kubernetes").
#
#   docker build -t tollgate .
#   docker run --read-only -p 4180:4180 -p 127.0.0.1:8080:8080 \
#       -v "$PWD/secrets:/run/secrets/tollgate:ro" tollgate

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The release profile, dynamically linked against the build stage's glibc: the libraries
# copied below are the ones it was linked with.
RUN cargo build --locked --release --bin tollgate \
 && deploy/image/assemble-root.sh /rootfs target/release/tollgate deploy/kubernetes/tollgate.toml

FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
# Public listener (forward-auth, proxy, token service) and admin listener (/metrics,
# /healthz, /readyz), as deploy/kubernetes/tollgate.toml binds them.
EXPOSE 4180 8080
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.toml"]
