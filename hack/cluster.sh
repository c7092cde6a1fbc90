#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for trying the chart and for test/cluster:
# containerd and runc (Debian), the CNI bridge and host-local plugins (Debian), etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy (built from Go modules by
# hack/build-control-plane.sh node), and the manager image built without Docker (hack/image).
#
#   hack/cluster.sh up [DIR]      install the apt packages it needs, start everything, import the images,
#                                 wait until the node is Ready; prints DIR/kubeconfig on its last line
#   hack/cluster.sh import [DIR]  import bin/image/*.tar into the running cluster's containerd again
#   hack/cluster.sh down [DIR]    stop what `up` started (by PID), undo every change to the machine, delete DIR
#
# DIR defaults to $CLUSTER_DIR or ${TMPDIR:-/tmp}/wasm-operator-cluster. Needs root (kubelet, containerd,
# network setup). Nothing of the cluster reaches beyond the machine: pods get routes to the pod network and
# the Service range only (no default route), no masquerading, and an empty resolv.conf (no name is resolved
# through the machine's resolver; no pod here needs cluster DNS: callers use Service IPs). Only one cluster
# runs at a time: the bridge, the addresses and the ports below are fixed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$root/hack/tools/kube/go.mod")
KBIN=${KBIN:-$root/bin/k8s/$version}
IMAGES=${IMAGES:-$root/bin/image}
S=${2:-${CLUSTER_DIR:-${TMPDIR:-/tmp}/wasm-operator-cluster}}

NODE=node-1
BRIDGE=wocbr0           # created by `up` (so that its address is the node IP) and deleted by `down`
NODE_IP=10.88.0.1       # the bridge's address: the node IP, the API server's and the kubelet's address
POD_CIDR=10.88.0.0/16
SVC_CIDR=10.96.0.0/16
CGROOT=wasm-operator-cluster # kubelet's cgroupRoot, in every cgroup v1 hierarchy (or the v2 tree)
ETCD_PORT=23790         # not etcd's default, so an etcd of someone else on 2379 is left alone
ETCD_PEER_PORT=23800
SOCK=$S/containerd/containerd.sock
PIDS=$S/pids
CTR=(ctr --address "$SOCK" -n k8s.io)
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack openssl curl)

log() { echo "cluster: [$(date +%T)] $*" >&2; }

# packages: install the Debian packages the cluster runs on, when one is missing (a fresh machine, CI).
packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]} with apt-get"
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start() { # start <name> <command...>: run detached in its own session; its PID goes to $PIDS
	local n=$1
	shift
	setsid "$@" >"$S/logs/$n.log" 2>&1 </dev/null &
	echo "$n $!" >>"$PIDS"
}

wait_for() { # wait_for <what> <seconds> <command...>
	local what=$1 t=$2
	shift 2
	for ((i = 0; i < t * 4; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.25
	done
	log "$what: not there after ${t}s; logs in $S/logs"
	return 1
}

pki() { # a throwaway CA, the components' certificates, kubeconfigs and the ServiceAccount signing key
	local d=$S/pki
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" -days 7 -subj /CN=wasm-operator-cluster-ca 2>/dev/null
	cert() { # cert <name> <subject> [subjectAltName]: a client certificate, or a server one with a SAN
		local n=$1 subj=$2 san=${3:-}
		openssl req -newkey rsa:2048 -nodes -keyout "$d/$n.key" -out "$d/$n.csr" -subj "$subj" 2>/dev/null
		{
			echo "basicConstraints=CA:FALSE"
			echo "keyUsage=critical,digitalSignature,keyEncipherment"
			if [ -n "$san" ]; then
				echo "extendedKeyUsage=serverAuth,clientAuth"
				echo "subjectAltName=$san"
			else
				echo "extendedKeyUsage=clientAuth"
			fi
		} >"$d/$n.ext"
		openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/$n.crt" \
			-days 7 -extfile "$d/$n.ext" 2>/dev/null
		rm -f "$d/$n.csr" "$d/$n.ext"
	}
	cert apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:$NODE_IP,IP:${SVC_CIDR%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
	cert admin "/O=system:masters/CN=cluster-admin"
	cert controller-manager /CN=system:kube-controller-manager
	cert scheduler /CN=system:kube-scheduler
	cert kube-proxy /CN=system:kube-proxy
	cert kubelet-client "/O=system:nodes/CN=system:node:$NODE"
	cert kubelet "/CN=$NODE" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE"
	openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
	openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
	local kc c
	for kc in admin:admin controller-manager:controller-manager scheduler:scheduler kube-proxy:kube-proxy kubelet:kubelet-client; do
		c=${kc#*:}
		cat >"$d/${kc%%:*}.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wasm-operator-cluster
  cluster: {server: "https://$NODE_IP:6443", certificate-authority: $d/ca.crt}
users:
- name: $c
  user: {client-certificate: $d/$c.crt, client-key: $d/$c.key}
contexts:
- name: wasm-operator-cluster
  context: {cluster: wasm-operator-cluster, user: $c}
current-context: wasm-operator-cluster
EOF
	done
	cp "$d/admin.kubeconfig" "$S/kubeconfig"
}

configs() {
	# containerd 1.6 (Debian bookworm's 1.6.20): everything under $S, its own socket, runc root and CNI config.
	cat >"$S/containerd/config.toml" <<EOF
version = 2
root = "$S/containerd/root"
state = "$S/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$S/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # The pause image is ours (hack/image), imported, never pulled.
  sandbox_image = "registry.k8s.io/pause:3.10"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  # Root here may lack CAP_SYS_RESOURCE, and then runc cannot lower a pod's oom_score_adj below
  # containerd's: clamp it instead of failing every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$S/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$S/runc"
EOF

	# Pods get the pod network and a route to the Service range, nothing else: no default route.
	cat >"$S/cni/net.d/10-wasm-operator.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "wasm-operator",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$S/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SVC_CIDR"}]
      }
    }
  ]
}
EOF

	# No nameserver: a pod that resolves a name fails at once, on the machine, instead of asking the
	# machine's resolver (the kubelet copies this file into every pod without cluster DNS).
	echo "# wasm-operator cluster: no name resolution" >"$S/resolv.conf"

	cat >"$S/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false          # kubelet 1.35+ refuses cgroup v1 hosts without it
cgroupDriver: cgroupfs       # containerd 1.6 has no RuntimeConfig call; no systemd here
cgroupRoot: /$CGROOT
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $S/pki/kubelet.crt
tlsPrivateKeyFile: $S/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $S/pki/ca.crt}
authorization: {mode: Webhook}
resolvConf: $S/resolv.conf
podLogsDir: $S/pod-logs
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100   # never collect images: they cannot be pulled again
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF

	cat >"$S/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $S/pki/kube-proxy.kubeconfig}
hostnameOverride: $NODE
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
EOF
}

# The sysctls the node components change (paths below /proc/sys); test/cluster checks that down puts them back.
CHANGED_SYSCTLS="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys
kernel/keys/root_maxbytes net/netfilter/nf_conntrack_tcp_timeout_established net/netfilter/nf_conntrack_tcp_timeout_close_wait"

# machine: the changes to the machine, each recorded so that `down` undoes exactly it.
machine() {
	cat /proc/sys/net/ipv4/ip_forward >"$S/ip_forward.orig" # the bridge plugin turns forwarding on
	# Sysctls the kubelet sets (protectKernelDefaults is off, so it changes them rather than refusing to
	# start) and kube-proxy sets (conntrack timeouts): their values now, put back by `down`.
	local k
	for k in $CHANGED_SYSCTLS; do
		[ -f "/proc/sys/$k" ] && echo "$k $(cat "/proc/sys/$k")" >>"$S/sysctl.orig"
	done
	# Paths that containerd's shims, libcni and the kubelet use whatever they are told: `down` removes
	# those that did not exist before.
	local p
	for p in /run/containerd /var/lib/cni /var/lib/kubelet; do
		[ -e "$p" ] || echo "$p" >>"$S/created-paths"
	done
	ip link add "$BRIDGE" type bridge
	echo "$BRIDGE" >"$S/bridge"
	ip addr add "$NODE_IP/16" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		mkdir -p "/sys/fs/cgroup/$CGROOT"
	else
		local h
		for h in /sys/fs/cgroup/*/; do
			h=${h%/}
			[ "$h" = /sys/fs/cgroup/unified ] && continue
			mkdir -p "$h/$CGROOT"
			if [ -f "$h/cpuset.cpus" ]; then # a cpuset cgroup needs its cpus and mems before tasks join
				cat "$h/cpuset.cpus" >"$h/$CGROOT/cpuset.cpus"
				cat "$h/cpuset.mems" >"$h/$CGROOT/cpuset.mems"
			fi
		done
	fi
}

images() {
	local img
	for img in "$IMAGES"/*.tar; do
		"${CTR[@]}" images import "$img" >/dev/null
		log "imported $(basename "$img")"
	done
}

up() {
	if [ -f "$PIDS" ]; then
		echo "cluster: $S already holds a cluster; run '$0 down $S' first" >&2
		exit 1
	fi
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		echo "cluster: the bridge $BRIDGE exists: another cluster of this script runs; stop it first" >&2
		exit 1
	fi
	local b
	for b in etcd kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy; do
		[ -x "$KBIN/$b" ] || { echo "cluster: no $KBIN/$b: run 'make node-components' first" >&2; exit 1; }
	done
	ls "$IMAGES"/pause.tar >/dev/null 2>&1 || { echo "cluster: no $IMAGES/pause.tar: run 'make images' first" >&2; exit 1; }
	packages
	local t0=$SECONDS
	mkdir -p "$S"/{logs,etcd,containerd,cni/net.d,cni/ipam,kubelet,pod-logs,volumes}
	: >"$PIDS"
	pki
	configs
	machine

	start containerd containerd --config "$S/containerd/config.toml"
	wait_for containerd 30 "${CTR[@]}" version
	images

	start etcd "$KBIN/etcd" --name cluster --data-dir "$S/etcd" --log-level warn --unsafe-no-fsync \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "cluster=http://127.0.0.1:$ETCD_PEER_PORT"
	wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

	local P=$S/pki K="$KBIN/kubectl --kubeconfig=$S/kubeconfig"
	# --kubelet-preferred-address-types=InternalIP: the API server reaches the kubelet by IP, never by
	# resolving the node's name.
	start kube-apiserver "$KBIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
		--tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
		--kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
		--service-cluster-ip-range="$SVC_CIDR" --authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction --allow-privileged=true
	wait_for kube-apiserver 90 $K get --raw /readyz

	start kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig="$P/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$P/controller-manager.kubeconfig" --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
		--service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
		--cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
		--service-cluster-ip-range="$SVC_CIDR" --allocate-node-cidrs=false
	start kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$P/scheduler.kubeconfig" \
		--authentication-kubeconfig="$P/scheduler.kubeconfig" --authorization-kubeconfig="$P/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false
	start kubelet "$KBIN/kubelet" --config="$S/kubelet.yaml" --kubeconfig="$P/kubelet.kubeconfig" \
		--hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$S/kubelet"
	start kube-proxy "$KBIN/kube-proxy" --config="$S/kube-proxy.yaml"

	wait_for "node $NODE Ready" 120 $K wait --for=condition=Ready "node/$NODE" --timeout=1s
	wait_for "default ServiceAccount" 60 $K get serviceaccount default -n default
	log "up in $((SECONDS - t0))s; kubectl --kubeconfig $S/kubeconfig"
	echo "$S/kubeconfig"
}

pid_of() { awk -v n="$1" '$1==n{print $2}' "$PIDS"; }

stop() { # stop <name>: SIGTERM the PID `up` recorded for it, SIGKILL after 15s
	local p
	p=$(pid_of "$1")
	[ -n "$p" ] && [ -d "/proc/$p" ] || return 0
	kill "$p" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		[ -d "/proc/$p" ] || return 0
		sleep 0.25
	done
	kill -9 "$p" 2>/dev/null || true
	log "killed $1 ($p): it did not stop within 15s"
}

kube_chains() { # delete every KUBE-* chain (kube-proxy's, kubelet's) and the rules that jump to them
	local ipt t r c rules
	for ipt in iptables ip6tables; do
		command -v $ipt >/dev/null || continue
		for t in filter nat mangle; do
			rules=$($ipt -t $t -S 2>/dev/null) || continue
			case $rules in *KUBE-*) ;; *) continue ;; esac
			printf '%s\n' "$rules" | { grep -E '^-A [A-Z]+ .*-j KUBE-' || true; } | { grep -vE '^-A KUBE-' || true; } |
				sed 's/^-A/-D/' | while read -r r; do eval "$ipt -t $t $r" || true; done
			for c in $(printf '%s\n' "$rules" | awk '/^-N KUBE-/{print $2}'); do $ipt -t $t -F "$c" || true; done
			for c in $(printf '%s\n' "$rules" | awk '/^-N KUBE-/{print $2}'); do $ipt -t $t -X "$c" || true; done
		done
	done
}

down() {
	if [ ! -f "$PIDS" ]; then
		log "no cluster in $S"
		return 0
	fi
	local K="$KBIN/kubectl --kubeconfig=$S/kubeconfig" ids="" c p
	# Nothing may create pods any more; then the kubelet tears every pod down (CNI DEL, unmounts).
	stop kube-controller-manager
	stop kube-scheduler
	if [ -S "$SOCK" ]; then
		ids=$("${CTR[@]}" containers ls -q 2>/dev/null || true)
		if $K delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1; then
			wait_for "pods gone" 60 bash -c "[ -z \"\$($K get pods -A -o name 2>/dev/null)\" ]" || true
		fi
	fi
	for c in kube-proxy kubelet kube-apiserver etcd; do stop $c; done
	if [ -S "$SOCK" ]; then # what the kubelet left
		for c in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
		for c in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true; done
		for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
	fi
	stop containerd
	# A shim of our containerd (its command line names our socket) still alive: by PID.
	for p in $(grep -lsa -- "$SOCK" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
		case $(cat "/proc/$p/comm" 2>/dev/null) in containerd-shim*) kill -9 "$p" 2>/dev/null || true ;; esac
	done
	[ -x "$KBIN/kube-proxy" ] && "$KBIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
	kube_chains
	# Mounts below $S (tokens, overlay root filesystems, shm, network namespaces), deepest first.
	{ grep " $S/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	[ -f "$S/bridge" ] && ip link del "$(cat "$S/bridge")" 2>/dev/null || true
	[ -f "$S/ip_forward.orig" ] && cat "$S/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward
	if [ -f "$S/sysctl.orig" ]; then
		while read -r k v; do echo "$v" >"/proc/sys/$k" 2>/dev/null || true; done <"$S/sysctl.orig"
	fi
	find /sys/fs/cgroup -depth -type d -path "*/$CGROOT*" -exec rmdir {} \; 2>/dev/null || true
	# Two paths the kubelet and libcni use whatever they are told: the CNI result cache and the
	# device-plugin socket folder.
	for c in $ids; do rm -f /var/lib/cni/results/*-"$c"-* 2>/dev/null || true; done
	rm -f /var/lib/cni/results/wasm-operator-* /var/lib/kubelet/device-plugins/kubelet.sock 2>/dev/null || true
	if [ -f "$S/created-paths" ]; then
		while read -r p; do
			case $p in /run/containerd | /var/lib/cni | /var/lib/kubelet) rm -rf "$p" ;; esac
		done <"$S/created-paths"
	fi
	local keep=${LOGS_DIR:-}
	if [ -n "$keep" ]; then mkdir -p "$keep" && cp -r "$S/logs/." "$keep/" 2>/dev/null || true; fi
	rm -rf "$S"
	log "down${keep:+ (component logs in $keep)}"
}

case ${1:-} in
up) up ;;
import) images ;;
down) down ;;
*)
	echo "usage: $0 up|import|down [DIR]" >&2
	exit 2
	;;
esac
