//go:build wasip1

package pdk

import (
	"errors"
	"strings"
)

// Send makes the request through the host and returns its response. It
// returns an error when the host reports no status code or response headers
// it cannot decode; a request the host refuses, or one that fails on the way,
// ends the call in the host instead.
func (r HTTPRequest) Send() (HTTPResponse, error) {
	method := strings.ToUpper(r.Method)
	if method == "" {
		method = "GET"
	}
	// The host frees the request and body blocks after reading them.
	req := allocBytes(encodeHTTPRequest(method, r.URL, r.Header))
	body := allocBytes(r.Body)
	offset := hostHTTPRequest(req, body)
	resp := HTTPResponse{
		Status: int(hostHTTPStatusCode()),
		Body:   takeBlock(offset),
	}
	if resp.Body == nil {
		resp.Body = []byte{}
	}
	if h := hostHTTPHeaders(); h != 0 {
		header, err := decodeStringMap(takeBlock(h))
		if err != nil {
			return resp, errors.New("pdk: response headers from host: " + err.Error())
		}
		resp.Header = header
	}
	if resp.Status == 0 {
		return resp, errors.New("pdk: host returned no HTTP status for " + r.URL)
	}
	return resp, nil
}
