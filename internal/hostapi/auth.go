package hostapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The permission a caller needs: create on wasmplugins/call in the plugin's namespace.
const (
	permGroup       = "wasm-operator.dev"
	permResource    = "wasmplugins"
	permSubresource = "call"
	permVerb        = "create"
)

// Auth cache defaults: allowed answers are kept longer than denied ones, so that a token or a
// RoleBinding just created takes effect quickly while a steady caller costs no review.
const (
	DefaultAuthCacheTTL       = 10 * time.Second
	DefaultAuthDeniedCacheTTL = 2 * time.Second
	DefaultAuthCacheSize      = 4096
	// reviewTimeout bounds one TokenReview or SubjectAccessReview.
	reviewTimeout = 10 * time.Second
	// DefaultTokenReviewRate and DefaultTokenReviewBurst bound the TokenReviews one client address
	// causes (tokens not in the cache): a steady caller needs one per token per AuthCacheTTL, a flood
	// of made-up tokens gets 429 instead of loading the API server.
	DefaultTokenReviewRate  = 2.0
	DefaultTokenReviewBurst = 20
	// maxTokenBytes bounds a bearer token; ServiceAccount tokens are about 1 KiB.
	maxTokenBytes = 16 << 10
)

// errThrottled: the client address has used its TokenReviews for now.
var errThrottled = errors.New("too many token reviews from this address")

// authorizer checks bearer tokens with TokenReview and access with SubjectAccessReview, and caches
// both answers. Concurrent misses for the same key share one review.
type authorizer struct {
	client     kubernetes.Interface
	audiences  []string // of call tokens
	metricsAud []string // of /metrics tokens; nil: the API server's
	allowedTTL time.Duration
	deniedTTL  time.Duration
	now        func() time.Time

	tokens   *ttlCache[[sha256.Size]byte, tokenResult]
	access   *ttlCache[accessKey, accessResult]
	flight   singleflight.Group
	limiters *clientLimiters
}

type tokenResult struct {
	ok   bool
	user authnv1.UserInfo
}

type accessKey struct {
	token     [sha256.Size]byte // the token stands for its user, who is cached with it
	namespace string
	name      string
	path      string // set for a non-resource URL such as /metrics, read with get
}

type accessResult struct {
	allowed bool
	reason  string
}

// authDecision is what the handler answers when a caller is not let through.
type authDecision struct {
	status  int
	outcome string
	message string
	err     error // for 500: why a review could not be made; logged, not sent
}

// check authenticates the Authorization header of a request from client (its remote address) and
// authorizes a call of namespace/name. It returns nil when the call may proceed.
func (a *authorizer) check(ctx context.Context, client, header, namespace, name string) *authDecision {
	return a.decide(ctx, client, header, a.audiences, accessKey{namespace: namespace, name: name})
}

// checkPath authenticates the Authorization header and authorizes get on a non-resource URL such as
// /metrics, as the API server's own /metrics is guarded. It returns nil when the request may proceed.
func (a *authorizer) checkPath(ctx context.Context, client, header, path string) *authDecision {
	return a.decide(ctx, client, header, a.metricsAud, accessKey{path: path})
}

// decide authenticates a token for one of audiences (nil: the API server's) and authorizes key.
func (a *authorizer) decide(ctx context.Context, client, header string, audiences []string, key accessKey) *authDecision {
	token, ok := bearerToken(header)
	if !ok {
		return &authDecision{status: http.StatusUnauthorized, outcome: OutcomeUnauthorized,
			message: "unauthorized: a bearer token is required (Authorization: Bearer <token>)"}
	}
	if !wellFormedJWT(token) {
		// Refused without a review: only JWTs carry an audience (what TokenRequest and projected
		// ServiceAccount tokens issue), so no other token can pass, and junk costs the API server nothing.
		return &authDecision{status: http.StatusUnauthorized, outcome: OutcomeUnauthorized,
			message: "unauthorized: the bearer token is not a JWT; send a ServiceAccount token of the host's audience (a projected serviceAccountToken volume)"}
	}
	// The answer holds for these audiences only: they are part of the cache key.
	sum := sha256.Sum256([]byte(strings.Join(audiences, ",") + "\x00" + token))
	tr, err := a.review(ctx, client, sum, token, audiences)
	if errors.Is(err, errThrottled) {
		return &authDecision{status: http.StatusTooManyRequests, outcome: OutcomeThrottled,
			message: "too many new tokens from " + clientIP(client) + ": retry later with a token already checked"}
	}
	if err != nil {
		return &authDecision{status: http.StatusInternalServerError, outcome: OutcomeError,
			message: "authentication is unavailable", err: err}
	}
	if !tr.ok {
		msg := "unauthorized: the bearer token is not valid"
		if len(audiences) > 0 {
			msg += " for audience " + strings.Join(audiences, " or ") + " (request it with a projected serviceAccountToken volume)"
		}
		return &authDecision{status: http.StatusUnauthorized, outcome: OutcomeUnauthorized, message: msg}
	}
	key.token = sum
	ar, err := a.authorize(ctx, key, tr.user)
	if err != nil {
		return &authDecision{status: http.StatusInternalServerError, outcome: OutcomeError,
			message: "authorization is unavailable", err: err}
	}
	if !ar.allowed {
		msg := fmt.Sprintf("forbidden: %q needs permission to %s %s/%s (API group %s) in namespace %q",
			tr.user.Username, permVerb, permResource, permSubresource, permGroup, key.namespace)
		if key.path != "" {
			msg = fmt.Sprintf("forbidden: %q needs permission to get %s (a ClusterRole rule with nonResourceURLs)",
				tr.user.Username, key.path)
		}
		if ar.reason != "" {
			msg += ": " + ar.reason
		}
		return &authDecision{status: http.StatusForbidden, outcome: OutcomeForbidden, message: msg}
	}
	return nil
}

func (a *authorizer) review(ctx context.Context, client string, sum [sha256.Size]byte, token string, audiences []string) (tokenResult, error) {
	if r, ok := a.tokens.get(sum, a.now()); ok {
		return r, nil
	}
	if a.limiters != nil && !a.limiters.allow(clientIP(client), a.now()) {
		return tokenResult{}, errThrottled
	}
	v, err, _ := a.flight.Do("t"+string(sum[:]), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		res, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences},
		}, metav1.CreateOptions{})
		if err != nil {
			return tokenResult{}, fmt.Errorf("token review: %w", err)
		}
		r := tokenResult{ok: res.Status.Authenticated && audienceOK(audiences, res.Status.Audiences), user: res.Status.User}
		ttl := a.deniedTTL
		if r.ok {
			ttl = a.allowedTTL
		}
		a.tokens.put(sum, r, ttl, a.now())
		return r, nil
	})
	if err != nil {
		return tokenResult{}, err
	}
	return v.(tokenResult), nil
}

// audienceOK reports whether the token is meant for this server: when audiences are wanted, the API
// server must have confirmed one of them.
func audienceOK(want, got []string) bool {
	if len(want) == 0 {
		return true
	}
	for _, g := range got {
		if slices.Contains(want, g) {
			return true
		}
	}
	return false
}

func (a *authorizer) authorize(ctx context.Context, key accessKey, user authnv1.UserInfo) (accessResult, error) {
	if r, ok := a.access.get(key, a.now()); ok {
		return r, nil
	}
	v, err, _ := a.flight.Do("a"+string(key.token[:])+key.namespace+"/"+key.name+"|"+key.path, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		extra := make(map[string]authzv1.ExtraValue, len(user.Extra))
		for k, v := range user.Extra {
			extra[k] = authzv1.ExtraValue(v)
		}
		spec := authzv1.SubjectAccessReviewSpec{User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra}
		if key.path != "" {
			spec.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: key.path, Verb: "get"}
		} else {
			spec.ResourceAttributes = &authzv1.ResourceAttributes{
				Namespace:   key.namespace,
				Verb:        permVerb,
				Group:       permGroup,
				Resource:    permResource,
				Subresource: permSubresource,
				Name:        key.name,
			}
		}
		res, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx,
			&authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			return accessResult{}, fmt.Errorf("subject access review: %w", err)
		}
		r := accessResult{allowed: res.Status.Allowed && !res.Status.Denied, reason: res.Status.Reason}
		ttl := a.deniedTTL
		if r.allowed {
			ttl = a.allowedTTL
		}
		a.access.put(key, r, ttl, a.now())
		return r, nil
	})
	if err != nil {
		return accessResult{}, err
	}
	return v.(accessResult), nil
}

// wellFormedJWT reports whether token has the shape of a JWS compact serialization: three
// base64url segments whose first decodes to a JSON object naming an algorithm.
func wellFormedJWT(token string) bool {
	if len(token) > maxTokenBytes {
		return false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return false
	}
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	return json.Unmarshal(head, &h) == nil && h.Alg != ""
}

// clientIP is the host part of a remote address ("10.1.2.3:5555" -> "10.1.2.3").
func clientIP(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// clientLimiters keeps a token bucket per client address, bounded to max addresses: when full, the
// addresses not seen for the longest are dropped (a dropped address starts with a full bucket,
// which costs at most one burst).
type clientLimiters struct {
	mu    sync.Mutex
	m     map[string]*clientLimiter
	rate  rate.Limit
	burst int
	max   int
}

type clientLimiter struct {
	l    *rate.Limiter
	seen time.Time
}

func newClientLimiters(r float64, burst, max int) *clientLimiters {
	return &clientLimiters{m: map[string]*clientLimiter{}, rate: rate.Limit(r), burst: burst, max: max}
}

func (c *clientLimiters) allow(ip string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.m[ip]
	if !ok {
		if len(c.m) >= c.max {
			c.evict()
		}
		cl = &clientLimiter{l: rate.NewLimiter(c.rate, c.burst)}
		c.m[ip] = cl
	}
	cl.seen = now
	return cl.l.AllowN(now, 1)
}

// evict drops the older half of the addresses.
func (c *clientLimiters) evict() {
	seen := make([]time.Time, 0, len(c.m))
	for _, cl := range c.m {
		seen = append(seen, cl.seen)
	}
	slices.SortFunc(seen, func(a, b time.Time) int { return a.Compare(b) })
	cut := seen[len(seen)/2]
	for ip, cl := range c.m {
		if !cl.seen.After(cut) {
			delete(c.m, ip)
		}
	}
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header; the scheme is
// case-insensitive (RFC 9110).
func bearerToken(header string) (string, bool) {
	const prefix = "bearer "
	if len(header) <= len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return "", false
	}
	token := strings.TrimSpace(header[len(prefix):])
	return token, token != ""
}
