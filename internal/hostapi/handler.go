package hostapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// maxPooledBuffer is the largest input buffer kept for reuse; larger ones are left to the GC so
// that one big call does not pin its memory.
const maxPooledBuffer = 1 << 20

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// callLabels are the metric labels of one call; see Metrics.Calls for which are filled when.
type callLabels struct{ namespace, name, function string }

func (s *Server) serveCall(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ns, name, fn := r.PathValue("namespace"), r.PathValue("name"), r.PathValue("function")
	id := requestID(r.Header.Get("X-Request-Id"))
	h := w.Header()
	h.Set("X-Request-Id", id)

	if r.Method != http.MethodPost {
		h.Set("Allow", http.MethodPost)
		writeText(w, http.StatusMethodNotAllowed, "method not allowed: call a plugin with POST\n")
		return
	}

	log, err := logr.FromContext(r.Context())
	if err != nil {
		log = s.log
	}
	log = log.WithValues("requestID", id, "namespace", ns, "name", name, "function", fn)
	ctx := logr.NewContext(context.WithValue(r.Context(), requestIDKey{}, id), log)

	limit, served := s.invoker.MaxInputBytes(ns, name)
	var lbl callLabels
	if served {
		lbl.namespace, lbl.name = ns, name
	}

	if s.auth != nil {
		if d := s.auth.check(ctx, r.RemoteAddr, r.Header.Get("Authorization"), ns, name); d != nil {
			refused(w, d)
			if d.status == http.StatusUnauthorized {
				if r.Header.Get("Authorization") == "" {
					h.Set("WWW-Authenticate", `Bearer realm="wasm-operator"`)
				} else {
					h.Set("WWW-Authenticate", `Bearer realm="wasm-operator", error="invalid_token"`)
				}
			}
			if d.err != nil {
				log.Error(d.err, "cannot check the caller's access")
			}
			s.finish(w, log, lbl, d.outcome, d.status, d.message, start)
			return
		}
	}

	if !served {
		s.finish(w, log, lbl, OutcomeNotFound, http.StatusNotFound,
			"wasmplugin "+ns+"/"+name+" is not served on this node", start)
		return
	}
	if limit <= 0 {
		limit = DefaultMaxInputBytes
	}
	if r.ContentLength > limit {
		s.finish(w, log, lbl, OutcomeTooLarge, http.StatusRequestEntityTooLarge, tooLarge(limit), start)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			buf.Reset()
			bufPool.Put(buf)
		}
	}()
	buf.Reset()
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1)); err != nil {
		if r.Context().Err() != nil {
			s.finish(w, log, lbl, OutcomeCanceled, 499, "", start)
			return
		}
		s.finish(w, log, lbl, OutcomeError, http.StatusBadRequest, "read input: "+err.Error(), start)
		return
	}
	if int64(buf.Len()) > limit {
		s.finish(w, log, lbl, OutcomeTooLarge, http.StatusRequestEntityTooLarge, tooLarge(limit), start)
		return
	}

	out, err := s.invoker.Invoke(ctx, ns, name, fn, buf.Bytes())
	if err == nil {
		lbl.function = fn
		s.metrics.CallDuration.WithLabelValues(lbl.namespace, lbl.name, lbl.function).Observe(time.Since(start).Seconds())
		s.metrics.Calls.WithLabelValues(lbl.namespace, lbl.name, lbl.function, OutcomeOK).Inc()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.Itoa(len(out)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
		if v := log.V(1); v.Enabled() {
			v.Info("call", "outcome", OutcomeOK, "status", http.StatusOK, "duration", time.Since(start))
		}
		return
	}

	var perr *PluginError
	var serr *SaturatedError
	switch {
	case errors.Is(err, ErrNotServed):
		// Unloaded between the lookup and the call.
		lbl = callLabels{}
		s.finish(w, log, lbl, OutcomeNotFound, http.StatusNotFound,
			"wasmplugin "+ns+"/"+name+" is not served on this node", start)
		return
	case errors.Is(err, ErrNoFunction):
		s.finish(w, log, lbl, OutcomeNotFound, http.StatusNotFound,
			"wasmplugin "+ns+"/"+name+" exports no function "+strconv.Quote(fn), start)
		return
	}
	lbl.function = fn
	s.metrics.CallDuration.WithLabelValues(lbl.namespace, lbl.name, lbl.function).Observe(time.Since(start).Seconds())
	switch {
	case errors.As(err, &perr):
		h.Set("X-Plugin-Return-Code", strconv.FormatUint(uint64(perr.Code), 10))
		s.finish(w, log, lbl, OutcomePluginError, http.StatusBadGateway, perr.Error(), start)
	case errors.Is(err, ErrInputTooLarge):
		s.finish(w, log, lbl, OutcomeTooLarge, http.StatusRequestEntityTooLarge, tooLarge(limit), start)
	case errors.Is(err, ErrSaturated):
		after := DefaultRetryAfter
		if errors.As(err, &serr) && serr.RetryAfter > 0 {
			after = serr.RetryAfter
		}
		h.Set("Retry-After", strconv.FormatInt(int64((after+time.Second-1)/time.Second), 10))
		s.finish(w, log, lbl, OutcomeSaturated, http.StatusTooManyRequests,
			"wasmplugin "+ns+"/"+name+" is saturated: retry later", start)
	case r.Context().Err() != nil:
		// The caller went away; whatever the Invoker said, nobody reads the answer.
		s.finish(w, log, lbl, OutcomeCanceled, 499, "", start)
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		s.finish(w, log, lbl, OutcomeTimeout, http.StatusGatewayTimeout, "call timed out: "+err.Error(), start)
	default:
		log.Error(err, "call failed")
		s.finish(w, log, lbl, OutcomeError, http.StatusInternalServerError,
			"internal error (request id "+RequestID(ctx)+")", start)
	}
}

// refused prepares the answer to a request the authorizer turned down: the connection closes right
// after it, without reading the rest of the body (net/http would otherwise drain up to 256 KiB first),
// so a caller without a valid token cannot keep a connection open, or keep sending a body, for free;
// a throttled caller is told when to come back.
func refused(w http.ResponseWriter, d *authDecision) {
	h := w.Header()
	switch d.status {
	case http.StatusTooManyRequests:
		h.Set("Retry-After", "1")
		fallthrough
	case http.StatusUnauthorized, http.StatusForbidden:
		h.Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

func tooLarge(limit int64) string {
	return "input too large: this plugin accepts at most " + strconv.FormatInt(limit, 10) + " bytes"
}

// finish counts an unsuccessful call, logs it and answers it with a text message. Status 499
// stands for a caller that went away: nothing is written.
func (s *Server) finish(w http.ResponseWriter, log logr.Logger, lbl callLabels, outcome string, status int, msg string, start time.Time) {
	s.metrics.Calls.WithLabelValues(lbl.namespace, lbl.name, lbl.function, outcome).Inc()
	if v := log.V(1); v.Enabled() {
		v.Info("call", "outcome", outcome, "status", status, "duration", time.Since(start))
	}
	switch status {
	case 499:
	case http.StatusBadGateway:
		writeText(w, status, msg) // the plugin's error text, as it set it
	default:
		writeText(w, status, msg+"\n")
	}
}

func writeText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}
