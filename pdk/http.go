package pdk

// HTTPRequest describes an HTTP request made through the host. The host
// decides which hosts a plugin may reach; a request it refuses stops the
// call with an error naming the URL.
type HTTPRequest struct {
	// Method is the HTTP method; empty means GET.
	Method string
	// URL is the absolute URL to request.
	URL string
	// Header holds request header fields, one value each.
	Header map[string]string
	// Body is the request body; nil or empty sends none.
	Body []byte
}

// HTTPResponse is what the host returns for an HTTPRequest.
type HTTPResponse struct {
	// Status is the HTTP status code.
	Status int
	// Body is the response body, cut at the host's response size limit.
	Body []byte
	// Header holds response header fields with lowercase names and multiple
	// values joined by commas. It is nil when the host does not report
	// response headers (the Extism SDKs do so only when enabled).
	Header map[string]string
}
