#!/usr/bin/env bash
# Rebuilds third_party/wazero: the wazero module of the given version (default: the one in go.mod's
# require line) from the Go module proxy, without the parts this project neither builds nor tests, with
# hack/wazero/termination.patch applied (RATIONALE.md, "Why is wazero patched for call timeouts?").
#
#   hack/wazero/update.sh [vX.Y.Z]   rebuild third_party/wazero (and go.mod's require line)
#   hack/wazero/update.sh -check     fail when third_party/wazero is not the published version plus the patch
#   hack/wazero/update.sh -diff      rewrite the patch from third_party/wazero after editing it there
#
# After an update to a new version: resolve what `git apply` rejects in third_party/wazero, run
# `hack/wazero/update.sh -diff`, then `make test-wazero` (wazero's own tests of the patched packages).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
patch=$root/hack/wazero/termination.patch
dest=$root/third_party/wazero
mode=update
case "${1:-}" in
-check) mode=check; shift ;;
-diff) mode=diff; shift ;;
esac
version=${1:-$(cd "$root" && go list -m -f '{{.Version}}' github.com/tetratelabs/wazero)}

# What is left out: the spec-test corpus (70 MB) and the tests that need it, the site, examples, the CLI.
excludes=(
	--exclude=./internal/integration_test/spectest --exclude=./internal/integration_test/fuzzcases
	--exclude=./internal/integration_test/libsodium --exclude=./internal/integration_test/stdlibs
	--exclude=./internal/integration_test/bench --exclude=./internal/integration_test/filecache --exclude=./site --exclude=./examples --exclude=./packaging
	--exclude=./.github --exclude=./.netlify --exclude=./netlify.toml --exclude=./codecov.yml --exclude=./cmd
)

# pristine DIR: wazero $version as published, into DIR.
pristine() {
	local src
	src=$(cd "$root" && GOFLAGS=-mod=mod go mod download -json "github.com/tetratelabs/wazero@$version" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "cannot download github.com/tetratelabs/wazero@$version" >&2; exit 1; }
	mkdir -p "$1"
	(cd "$src" && tar cf - "${excludes[@]}" .) | tar xf - -C "$1"
	chmod -R u+w "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pristine "$tmp/wazero"

case $mode in
update)
	rm -rf "$dest"
	cp -r "$tmp/wazero" "$dest"
	(cd "$dest" && git apply --reject --whitespace=nowarn "$patch") || {
		echo "the patch does not apply cleanly to $version: resolve the *.rej files in $dest, then run $0 -diff" >&2
		exit 1
	}
	(cd "$root" && go mod edit -require "github.com/tetratelabs/wazero@$version" \
		-replace github.com/tetratelabs/wazero=./third_party/wazero && go mod tidy)
	echo "third_party/wazero is wazero $version with $(basename "$patch")"
	;;
check)
	(cd "$tmp/wazero" && git apply --whitespace=nowarn "$patch")
	if ! diff -r "$tmp/wazero" "$dest" >"$tmp/out"; then
		cat "$tmp/out"
		echo "third_party/wazero is not wazero $version plus $(basename "$patch"): edit it there and run $0 -diff" >&2
		exit 1
	fi
	;;
diff)
	# Both trees side by side as a/ and b/, so that the patch reads like any git diff; git diff --no-index
	# exits 1 when the trees differ, which they do.
	mv "$tmp/wazero" "$tmp/a"
	cp -r "$dest" "$tmp/b"
	find "$tmp/b" \( -name '*.rej' -o -name '*.orig' \) -delete
	(cd "$tmp" && git diff --no-index --no-prefix a b || true) >"$patch"
	find "$dest" \( -name '*.rej' -o -name '*.orig' \) -delete
	echo "wrote $patch ($(grep -c '^diff' "$patch") files)"
	;;
esac
