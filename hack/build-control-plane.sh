#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, etcd, kubectl) from Go modules into bin/k8s/<version>/,
# skipping what is already there. No binary is downloaded: everything comes from the Go module proxy.
# The first build of kube-apiserver takes about 5 minutes on two cores; later builds hit the Go build cache.
# Prints the folder to hand to envtest as KUBEBUILDER_ASSETS on its last line.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$root/hack/tools/kube/go.mod")
out="$root/bin/k8s/$version"
mkdir -p "$out"

build() { # build <binary> <module dir> <package>
	local bin=$1 dir=$2 pkg=$3
	if [ -x "$out/$bin" ]; then
		echo "control plane: $bin $version already built" >&2
		return
	fi
	echo "control plane: building $bin from $pkg (the first build takes minutes)..." >&2
	local start=$SECONDS
	(cd "$root/hack/tools/$dir" && go build -trimpath -o "$out/$bin.tmp" "$pkg")
	mv "$out/$bin.tmp" "$out/$bin"
	echo "control plane: built $bin in $((SECONDS - start))s" >&2
}

build etcd etcd .
build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver
build kubectl kube k8s.io/kubernetes/cmd/kubectl
echo "$out"
