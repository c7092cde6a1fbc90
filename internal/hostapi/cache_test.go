package hostapi

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// jwtLike makes a token with the shape of a JWT whose payload is name, as the fake reviews know it.
func jwtLike(name string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(name)) + ".c2ln"
}

func jwtName(token string) string {
	parts := strings.Split(token, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	return string(b)
}

// fakeReviews answers TokenReviews (jwtLike("good") and jwtLike("other") are valid) and SubjectAccessReviews
// (namespace "allowed" is allowed), counting them; a release channel, when set, holds each review.
type fakeReviews struct {
	tokens, sars atomic.Int64
	release      chan struct{}
	fail         atomic.Bool
}

func (f *fakeReviews) client() *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.tokens.Add(1)
		if f.release != nil {
			<-f.release
		}
		if f.fail.Load() {
			return true, nil, errors.New("connection refused")
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		switch tr.Spec.Token {
		case jwtLike("good"), jwtLike("other"):
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
				User: authnv1.UserInfo{Username: "user-" + jwtName(tr.Spec.Token)}}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.sars.Add(1)
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ra := sar.Spec.ResourceAttributes
		sar.Status.Allowed = ra.Namespace == "allowed" && ra.Verb == "create" && ra.Group == "wasm-operator.dev" &&
			ra.Resource == "wasmplugins" && ra.Subresource == "call" && ra.Name == "p"
		return true, sar, nil
	})
	return cs
}

func newTestAuthorizer(f *fakeReviews, now *time.Time) *authorizer {
	return &authorizer{
		client: f.client(), allowedTTL: 10 * time.Second, deniedTTL: 2 * time.Second,
		now:    func() time.Time { return *now },
		tokens: newTTLCache[[32]byte, tokenResult](100), access: newTTLCache[accessKey, accessResult](100),
	}
}

func TestAuthCacheExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	f := &fakeReviews{}
	a := newTestAuthorizer(f, &now)
	ctx := context.Background()
	check := func(token, ns string, wantStatus int) {
		t.Helper()
		d := a.check(ctx, "10.0.0.1:1234", "Bearer "+jwtLike(token), ns, "p")
		got := 0
		if d != nil {
			got = d.status
		}
		if got != wantStatus {
			t.Fatalf("check(%s, %s) = %d, want %d", token, ns, got, wantStatus)
		}
	}
	reviews := func(wantTokens, wantSARs int64) {
		t.Helper()
		if f.tokens.Load() != wantTokens || f.sars.Load() != wantSARs {
			t.Fatalf("reviews: %d token, %d access; want %d, %d", f.tokens.Load(), f.sars.Load(), wantTokens, wantSARs)
		}
	}
	check("good", "allowed", 0)
	check("good", "denied", http.StatusForbidden)
	check("bad", "allowed", http.StatusUnauthorized)
	reviews(2, 2)

	now = now.Add(1900 * time.Millisecond) // every answer still cached
	check("good", "allowed", 0)
	check("good", "denied", http.StatusForbidden)
	check("bad", "allowed", http.StatusUnauthorized)
	reviews(2, 2)

	now = now.Add(200 * time.Millisecond) // denied answers expired, allowed ones not
	check("good", "allowed", 0)
	check("good", "denied", http.StatusForbidden)
	check("bad", "allowed", http.StatusUnauthorized)
	reviews(3, 3)

	now = now.Add(8 * time.Second) // allowed answers expired too
	check("good", "allowed", 0)
	reviews(4, 4)
}

func TestAuthReviewFailureIs500AndNotCached(t *testing.T) {
	now := time.Unix(1000, 0)
	f := &fakeReviews{}
	a := newTestAuthorizer(f, &now)
	f.fail.Store(true)
	d := a.check(context.Background(), "10.0.0.1:1234", "Bearer "+jwtLike("good"), "allowed", "p")
	if d == nil || d.status != http.StatusInternalServerError || d.err == nil {
		t.Fatalf("check with the API server down = %+v, want 500 with the cause", d)
	}
	f.fail.Store(false)
	if d := a.check(context.Background(), "10.0.0.1:1234", "Bearer "+jwtLike("good"), "allowed", "p"); d != nil {
		t.Fatalf("check once the API server is back = %+v, want allowed", d)
	}
}

func TestAuthConcurrentMissesShareOneReview(t *testing.T) {
	now := time.Unix(1000, 0)
	f := &fakeReviews{release: make(chan struct{})}
	a := newTestAuthorizer(f, &now)
	const callers = 64
	var started, done sync.WaitGroup
	started.Add(callers)
	done.Add(callers)
	denied := atomic.Int64{}
	for range callers {
		go func() {
			defer done.Done()
			started.Done()
			if d := a.check(context.Background(), "10.0.0.1:1234", "Bearer "+jwtLike("good"), "allowed", "p"); d != nil {
				denied.Add(1)
			}
		}()
	}
	started.Wait()
	close(f.release)
	done.Wait()
	if denied.Load() != 0 {
		t.Errorf("%d of %d callers denied", denied.Load(), callers)
	}
	// Goroutines that arrive after the shared review ended find the answer cached; at most the
	// stragglers of one review make another.
	if n := f.tokens.Load(); n > 2 {
		t.Errorf("%d concurrent misses made %d token reviews, want them shared", callers, n)
	}
}

func TestTTLCacheIsBounded(t *testing.T) {
	c := newTTLCache[int, int](10)
	now := time.Unix(0, 0)
	for i := range 100 {
		c.put(i, i, time.Minute, now)
		if c.len() > 10 {
			t.Fatalf("cache holds %d entries, bound 10", c.len())
		}
	}
	if v, ok := c.get(99, now); !ok || v != 99 {
		t.Errorf("latest entry lost: %v %v", v, ok)
	}
	if _, ok := c.get(99, now.Add(time.Minute)); ok {
		t.Error("entry returned after its TTL")
	}
}

func TestBearerToken(t *testing.T) {
	for _, tt := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"Bearer   abc  ", "abc", true},
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"Basic abc", "", false},
		{"", "", false},
	} {
		tok, ok := bearerToken(tt.header)
		if tok != tt.token || ok != tt.ok {
			t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tt.header, tok, ok, tt.token, tt.ok)
		}
	}
}
