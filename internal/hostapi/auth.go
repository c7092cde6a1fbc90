package hostapi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
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
)

// authorizer checks bearer tokens with TokenReview and access with SubjectAccessReview, and caches
// both answers. Concurrent misses for the same key share one review.
type authorizer struct {
	client     kubernetes.Interface
	audiences  []string
	allowedTTL time.Duration
	deniedTTL  time.Duration
	now        func() time.Time

	tokens *ttlCache[[sha256.Size]byte, tokenResult]
	access *ttlCache[accessKey, accessResult]
	flight singleflight.Group
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

// check authenticates the Authorization header and authorizes a call of namespace/name. It
// returns nil when the call may proceed.
func (a *authorizer) check(ctx context.Context, header, namespace, name string) *authDecision {
	return a.decide(ctx, header, accessKey{namespace: namespace, name: name})
}

// checkPath authenticates the Authorization header and authorizes get on a non-resource URL such as
// /metrics, as the API server's own /metrics is guarded. It returns nil when the request may proceed.
func (a *authorizer) checkPath(ctx context.Context, header, path string) *authDecision {
	return a.decide(ctx, header, accessKey{path: path})
}

func (a *authorizer) decide(ctx context.Context, header string, key accessKey) *authDecision {
	token, ok := bearerToken(header)
	if !ok {
		return &authDecision{status: http.StatusUnauthorized, outcome: OutcomeUnauthorized,
			message: "unauthorized: a bearer token is required (Authorization: Bearer <token>)"}
	}
	sum := sha256.Sum256([]byte(token))
	tr, err := a.review(ctx, sum, token)
	if err != nil {
		return &authDecision{status: http.StatusInternalServerError, outcome: OutcomeError,
			message: "authentication is unavailable", err: err}
	}
	if !tr.ok {
		return &authDecision{status: http.StatusUnauthorized, outcome: OutcomeUnauthorized,
			message: "unauthorized: the bearer token is not valid"}
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

func (a *authorizer) review(ctx context.Context, sum [sha256.Size]byte, token string) (tokenResult, error) {
	if r, ok := a.tokens.get(sum, a.now()); ok {
		return r, nil
	}
	v, err, _ := a.flight.Do("t"+string(sum[:]), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		res, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.audiences},
		}, metav1.CreateOptions{})
		if err != nil {
			return tokenResult{}, fmt.Errorf("token review: %w", err)
		}
		r := tokenResult{ok: res.Status.Authenticated && a.audienceOK(res.Status.Audiences), user: res.Status.User}
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

// audienceOK reports whether the token is meant for this server: when audiences are configured,
// the API server must have confirmed one of them.
func (a *authorizer) audienceOK(got []string) bool {
	if len(a.audiences) == 0 {
		return true
	}
	for _, g := range got {
		if slices.Contains(a.audiences, g) {
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
