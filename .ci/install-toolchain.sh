#!/bin/sh
# Installs the Rust toolchain pinned in rust-toolchain.toml, with the components it lists,
# through rustup (installing rustup itself first when it is missing). One script for every
# place that needs the toolchain: .ci/run and the builder stage of deploy/Dockerfile.
# Idempotent: an installed toolchain is left as it is.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"

if ! command -v rustup >/dev/null 2>&1; then
    command -v curl >/dev/null 2>&1 || {
        echo "install-toolchain: neither rustup nor curl found; install rustup (https://rustup.rs)" >&2
        exit 1
    }
    echo "install-toolchain: installing rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --no-modify-path --profile minimal --default-toolchain none
fi

toml="$root/rust-toolchain.toml"
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$toml")
[ -n "$channel" ] || { echo "install-toolchain: no channel in $toml" >&2; exit 1; }
# components = ["rust-src", "clippy", "rustfmt"] -> -c rust-src -c clippy -c rustfmt
components=$(sed -n 's/^components *= *\[\(.*\)\]/\1/p' "$toml" | tr -d '" ' | tr ',' ' ')
set --
for c in $components; do set -- "$@" -c "$c"; done
rustup toolchain install "$channel" --profile minimal "$@"
