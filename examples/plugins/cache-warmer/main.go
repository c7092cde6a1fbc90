//go:build wasip1

// Command cache-warmer is an example plugin for a schedule: a schedule calls
// warm, which fetches the upstream URL and keeps its body in the host's
// key-value store, so calls of get answer from the store without waiting on
// the upstream, on every instance of the plugin.
//
// README: the config key url names the upstream (required); ttl is how long
// a warmed copy lasts, in seconds (default 300), so that a schedule that stops
// running does not leave a stale copy forever. warm GETs url, stores the body
// and returns "warmed <n> bytes"; a status of 400 or more fails the call and
// keeps the last copy. get returns the stored copy, or, when there is none
// (not warmed yet, or expired), fetches it as warm does, stores it and returns
// it. It needs the http permission with the url's host allowed and the kv
// permission; a schedule such as {name: warm, schedule: "@every 1m", function:
// warm, scope: Node} keeps the copy of each node's store fresh.
package main

import (
	"strconv"
	"time"

	"github.com/wasm-operator/wasm-operator/pdk"
)

const key = "cache/body"

func upstream() (string, bool) {
	url, ok := pdk.Config("url")
	if !ok || url == "" {
		pdk.SetErrorString("config url is not set: name the upstream to warm from in spec.config.url")
		return "", false
	}
	return url, true
}

func ttl() time.Duration {
	if v, ok := pdk.Config("ttl"); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return 300 * time.Second
}

// refresh fetches the upstream and stores its body.
func refresh() ([]byte, bool) {
	url, ok := upstream()
	if !ok {
		return nil, false
	}
	resp, err := pdk.HTTPRequest{Method: "GET", URL: url}.Send()
	if err != nil {
		pdk.SetError(err)
		return nil, false
	}
	if resp.Status >= 400 {
		pdk.SetErrorString("GET " + url + ": status " + strconv.Itoa(resp.Status) + "; the last copy stays")
		return nil, false
	}
	pdk.KVSetTTL(key, resp.Body, ttl())
	return resp.Body, true
}

//go:wasmexport warm
func warm() int32 {
	body, ok := refresh()
	if !ok {
		return 1
	}
	pdk.OutputString("warmed " + strconv.Itoa(len(body)) + " bytes")
	return 0
}

//go:wasmexport get
func get() int32 {
	if body, ok := pdk.KVGet(key); ok {
		pdk.Output(body)
		return 0
	}
	body, ok := refresh()
	if !ok {
		return 1
	}
	pdk.Output(body)
	return 0
}

func main() {}
