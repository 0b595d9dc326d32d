#!/bin/sh
# Builds the runtime image's root file system in ROOT from BINARY, CONFIG and the files that
# `runtime-files` lists: the Dockerfile runs it in its build stage and copies ROOT into an
# empty image; `scripts/packaging.sh` runs it on the CI machine and starts Tollgate in ROOT.
# Fails when ldd says the binary needs a library the list does not hold.
set -eu
if [ $# -ne 3 ]; then
    echo "usage: $0 ROOT BINARY CONFIG" >&2
    exit 2
fi
root=$1
binary=$2
config=$3
here=$(dirname "$0")
list="$here/runtime-files"

listed() { grep -v '^#' "$list" | grep -v '^$'; }

# Every library the binary asks the loader for must be in the list (by its path in the
# image, or by its file name under a listed directory's path).
missing=0
for library in $(ldd "$binary" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }'); do
    name=$(basename "$library")
    if ! listed | grep -q "/$name\$"; then
        echo "assemble-root: $binary needs $library, which $list does not list" >&2
        missing=1
    fi
done
[ "$missing" -eq 0 ] || exit 1

mkdir -p "$root"
for path in $(listed); do
    mkdir -p "$root$(dirname "$path")"
    # -L: the image holds the file itself where the build stage had a symbolic link.
    cp -L "$path" "$root$path"
done
install -D -m 0755 "$binary" "$root/usr/local/bin/tollgate"
install -D -m 0644 "$config" "$root/etc/tollgate/tollgate.toml"
# The user the image runs as (no shell, no home): uid and gid 65532, as distroless images name it.
mkdir -p "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
