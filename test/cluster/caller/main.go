// Command caller calls a plugin through a host's call API from inside a pod, as an application would, with
// the pod's projected ServiceAccount token. test/cluster runs it in the caller pod with kubectl exec:
//
//	caller once -url URL -token FILE -data IN [-ca FILE -server-name NAME]
//	                                              one call: prints the status code, then the body
//	caller loop -url URL -token FILE -data IN     calls until stdin closes, then prints
//	                                              "calls N failed M" and one line per failed call
//	caller sleep                                  the pod's main process: waits for SIGTERM
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: caller once|loop|sleep [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "", "the call URL")
	token := fs.String("token", "", "file holding the bearer token (read at every call: the kubelet rotates it)")
	data := fs.String("data", "", "the call's input")
	caFile := fs.String("ca", "", "PEM file of the CA the hosts' certificate is checked against")
	serverName := fs.String("server-name", "", "name the hosts' certificate must carry (the Service's DNS name)")
	_ = fs.Parse(os.Args[2:])
	tlsConfig := &tls.Config{ServerName: *serverName, MinVersion: tls.VersionTLS12}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		tlsConfig.RootCAs = x509.NewCertPool()
		if !tlsConfig.RootCAs.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "caller: no certificate in %s\n", *caFile)
			os.Exit(2)
		}
	}
	// A new connection per call, as kube-proxy's rules are meant for: an upgrade must not fail a caller
	// that connects while hosts change.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tlsConfig}}
	switch os.Args[1] {
	case "once":
		code, body, err := call(client, *url, *token, *data)
		if err != nil {
			fmt.Println(0)
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(code)
		fmt.Print(body)
	case "loop":
		var stop atomic.Bool
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop.Store(true) }()
		var calls, failed int
		var failures []string
		for !stop.Load() {
			calls++
			start := time.Now()
			code, body, err := call(client, *url, *token, *data)
			if err != nil || code != http.StatusOK {
				failed++
				if len(failures) < 50 {
					failures = append(failures, fmt.Sprintf("%s code %d err %v body %q", start.Format("15:04:05.000"), code, err, strings.TrimSpace(body)))
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Printf("calls %d failed %d\n", calls, failed)
		for _, f := range failures {
			fmt.Println(f)
		}
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
	default:
		fmt.Fprintf(os.Stderr, "caller: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

func call(client *http.Client, url, tokenFile, data string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(data))
	if err != nil {
		return 0, "", err
	}
	if tokenFile != "" {
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
