#!/usr/bin/env bash
# What iroh-identity adds to a project that already depends on iroh and tokio: the crates
# (by `cargo tree`, normal dependencies, this platform) and the build time (debug, with
# the project's own dependencies already built). Versions are pinned by our Cargo.lock.
#
#   bash benches/footprint.sh            # about 3 minutes on 2 cores
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A project as a user has it: iroh and tokio with their default features, plus what
# `#[tokio::main]` needs. Then the same project with iroh-identity, once per feature set.
project() { # name, extra dependency line
    mkdir -p "$work/$1/src"
    echo 'fn main() {}' > "$work/$1/src/main.rs"
    cat > "$work/$1/Cargo.toml" <<TOML
[package]
name = "$1"
version = "0.0.0"
edition = "2024"

[dependencies]
iroh = "1"
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
$2
TOML
    cp "$repo/Cargo.lock" "$work/$1/Cargo.lock"
}
crates() { # the packages in a project's tree, one `name vX.Y.Z` a line
    (cd "$work/$1" && cargo tree -q -e normal --prefix none --format '{p}' |
        sed 's/ (.*//' | grep -vE "^$1 " | sort -u)
}
seconds() { # runs a command, prints how long it took, in seconds
    local start end
    start=$(date +%s%N); "$@" >/dev/null 2>&1; end=$(date +%s%N)
    awk -v ns=$((end - start)) 'BEGIN { printf "%.1f", ns / 1e9 }'
}

project base ''
features=(default $(sed -n '/^\[features\]/,/^\[/p' "$repo/Cargo.toml" | grep -oE '^[a-z0-9_-]+' | grep -v '^default$' || true))
export CARGO_TARGET_DIR="$work/target"
base_build=$(seconds cargo build --manifest-path "$work/base/Cargo.toml")
crates base > "$work/base.txt"
echo "project with iroh and tokio: $(wc -l < "$work/base.txt") crates, clean debug build ${base_build} s"

for feature in "${features[@]}"; do
    if [ "$feature" = default ]; then dep="iroh-identity = { path = \"$repo\" }"
    else dep="iroh-identity = { path = \"$repo\", features = [\"$feature\"] }"; fi
    project "with-$feature" "$dep"
    crates "with-$feature" > "$work/with.txt"
    added=$(comm -13 "$work/base.txt" "$work/with.txt" | grep -v '^iroh-identity ' || true)
    removed=$(comm -23 "$work/base.txt" "$work/with.txt" || true)
    [ -z "$removed" ] || { echo "unexpected: crates left the tree: $removed"; exit 1; }
    # The project's own dependencies are built already (shared target directory): what is
    # left is iroh-identity and what it adds (beyond what an earlier feature set built).
    build=$(seconds cargo build --manifest-path "$work/with-$feature/Cargo.toml")
    label="default features"; [ "$feature" = default ] || label="default features + $feature"
    echo "iroh-identity ($label): adds $(echo -n "$added" | grep -c . || true) crates, ${build} s more to a clean debug build"
    [ -n "$added" ] && echo "$added" | sed 's/^/  + /'
done
