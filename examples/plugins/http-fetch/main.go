//go:build wasip1

// Command http-fetch is an example plugin that fetches a URL through the host.
//
// README: fetch takes a URL as input, GETs it and returns the response body;
// a status of 400 or more fails the call with "GET <url>: status <code>". It
// needs the http permission with the URL's host allowed. content_type GETs
// the URL the same way and returns the response's content-type header, or
// nothing when the host does not report response headers.
package main

import (
	"strconv"

	"github.com/wasm-operator/wasm-operator/pdk"
)

//go:wasmexport fetch
func fetch() int32 {
	url := pdk.InputString()
	pdk.Log(pdk.LevelDebug, "fetching "+url)
	resp, err := pdk.HTTPRequest{Method: "GET", URL: url}.Send()
	if err != nil {
		pdk.SetError(err)
		return 1
	}
	if resp.Status >= 400 {
		pdk.SetErrorString("GET " + url + ": status " + strconv.Itoa(resp.Status))
		return 1
	}
	pdk.Output(resp.Body)
	return 0
}

//go:wasmexport content_type
func contentType() int32 {
	url := pdk.InputString()
	resp, err := pdk.HTTPRequest{URL: url}.Send()
	if err != nil {
		pdk.SetError(err)
		return 1
	}
	pdk.OutputString(resp.Header["content-type"])
	return 0
}

func main() {}
