// Package netguard decides which network addresses a process may connect to on someone else's
// behalf, and dials only those. The node host's plugin HTTP (runtime) and the controller's module
// fetches (internal/source) share it, so a plugin and a WasmPlugin author meet the same rules:
//
//   - Local reports loopback, link-local (cloud metadata), unspecified and multicast addresses;
//     Private reports those and every other non-public address (RFC 1918, unique-local,
//     carrier-grade NAT, reserved ranges).
//
//   - Both look through IPv4 embedded in IPv6 (::ffff:0:0/96, ::ffff:0:0:0/96, ::/96,
//     64:ff9b::/96, 2002::/16) and refuse Teredo (2001::/32), whose IPv4 cannot be trusted.
//
//   - Dialer resolves names as absolute (a trailing dot), so the search domains of the pod's
//     resolv.conf never turn "redis.ns" into "redis.ns.svc.cluster.local", and checks every
//     resolved address just before connecting, so DNS rebinding gains nothing.
//
// A transport that dials only public addresses:
//
//	d := &netguard.Dialer{Check: func(ap netip.AddrPort) error {
//		if netguard.Private(ap.Addr()) {
//			return fmt.Errorf("%s: %w", ap, netguard.ErrPrivate)
//		}
//		return nil
//	}}
//	transport := &http.Transport{DialContext: d.DialContext, Proxy: nil}
package netguard
