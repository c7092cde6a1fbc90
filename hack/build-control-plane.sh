#!/usr/bin/env bash
# Builds Kubernetes components from Go modules into bin/k8s/<version>/, skipping those already built at that
# version. No binary is downloaded: everything comes from the Go module proxy, pinned in hack/tools/.
#
#   hack/build-control-plane.sh          the test control plane: etcd, kube-apiserver, kubectl (envtest)
#   hack/build-control-plane.sh node     the same and the node components of the single-node cluster:
#                                        kubelet, kube-controller-manager, kube-scheduler, kube-proxy
#
# The first build of kube-apiserver takes about 5 minutes on two cores, each node component a few more;
# later builds hit the Go build cache. Prints the folder to hand to envtest as KUBEBUILDER_ASSETS on its
# last line.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$root/hack/tools/kube/go.mod")
out="$root/bin/k8s/$version"
mkdir -p "$out"

# Built from a module, Kubernetes reports version "v0.0.0-master+$Format:%H$" (in `kubectl version`, the API
# server's /version, the Node's kubeletVersion), which Helm's kubeVersion checks and kubectl cannot parse.
# The release build sets these variables from git; here they come from the pinned module: its version and
# the time of its commit (the module proxy's record). The commit hash is not in the module, so it stays 0.
ldflags() {
	local major minor date v flags=""
	major=${version%%.*}
	minor=${version#*.}
	minor=${minor%%.*}
	date=$(cd "$root/hack/tools/kube" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
	for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $v.gitVersion=v$version -X $v.gitMajor=$major -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
		flags+=" -X $v.gitCommit=0000000000000000000000000000000000000000 -X $v.buildDate=$date"
	done
	echo "$flags"
}

# stamped <binary>: whether bin/k8s/<version>/<binary> exists and reports this version.
stamped() {
	local bin=$1 got
	[ -x "$out/$bin" ] || return 1
	case $bin in
	etcd) return 0 ;; # etcd's version is a constant of its module
	kubectl) got=$("$out/$bin" version --client 2>/dev/null || true) ;;
	*) got=$("$out/$bin" --version 2>/dev/null || true) ;;
	esac
	[[ $got == *"v$version"* ]]
}

build() { # build <binary> <module dir> <package> [ldflags]
	local bin=$1 dir=$2 pkg=$3 flags=${4:-}
	if stamped "$bin"; then
		echo "kubernetes: $bin $version already built" >&2
		return
	fi
	echo "kubernetes: building $bin from $pkg (the first build takes minutes)..." >&2
	local start=$SECONDS
	(cd "$root/hack/tools/$dir" && go build -trimpath -ldflags="$flags" -o "$out/$bin.tmp" "$pkg")
	mv "$out/$bin.tmp" "$out/$bin"
	echo "kubernetes: built $bin in $((SECONDS - start))s" >&2
}

components=(kube-apiserver kubectl)
case ${1:-} in
"") ;;
node) components+=(kubelet kube-controller-manager kube-scheduler kube-proxy) ;;
*)
	echo "usage: $0 [node]" >&2
	exit 2
	;;
esac

build etcd etcd .
flags=$(ldflags)
for c in "${components[@]}"; do
	build "$c" kube "k8s.io/kubernetes/cmd/$c" "$flags"
done
echo "$out"
