package endpoint

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestEntry(t *testing.T) {
	backend := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name+" "+r.URL.Path)
		}))
	}
	a, b := backend("a"), backend("b")
	defer b.Close()
	ta, tb := local(a.Listener.Addr().String(), true, "/"), local(b.Listener.Addr().String(), true, "/")
	outside := tb
	outside.Ranges = Ranges([]string{"203.0.113.0/24"})
	var served []Target
	e := NewEntry(func(ns, name string) ([]Target, bool) {
		switch ns + "/" + name {
		case "team-a/web":
			return served, true
		case "team-a/outside":
			return []Target{outside}, true
		}
		return nil, false
	})
	front := httptest.NewServer(e)
	defer front.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	served = []Target{ta, tb}
	// A path that climbs out of the Workload's prefix still reaches only
	// the Workload's own endpoints.
	req, _ := http.NewRequest(http.MethodGet, front.URL, nil)
	req.URL.Opaque = "/team-a/web/../../team-b/db/"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.HasPrefix(string(body), "a ") && !strings.HasPrefix(string(body), "b ") {
		t.Errorf("T9.entry-path-escape: %d %q, want an answer of team-a/web's own endpoints", resp.StatusCode, body)
	}
	seen := map[string]bool{}
	for range 4 {
		code, body := get("/team-a/web/hello/world")
		if code != http.StatusOK || !strings.HasSuffix(body, " /hello/world") {
			t.Fatalf("through the stable address: %d %q", code, body)
		}
		seen[body[:1]] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("requests went only to %v", seen)
	}
	// a stops answering before the hub's checks notice: every request
	// still succeeds, on b.
	a.Close()
	for range 4 {
		if code, body := get("/team-a/web/"); code != http.StatusOK || body != "b /" {
			t.Errorf("with a dead endpoint listed: %d %q", code, body)
		}
	}
	if e.suspected(ta.Dial, time.Now()) != 1 || e.suspected(tb.Dial, time.Now()) != 0 {
		t.Error("the endpoint that could not be dialled is not tried last")
	}
	served = nil
	if code, _ := get("/team-a/web/"); code != http.StatusServiceUnavailable {
		t.Errorf("no reachable endpoint: %d", code)
	}
	// A Workload that did not ask for a stable address is not served.
	for path, want := range map[string]int{"/team-a/other/": 404, "/": 404, "/team-a": 404, "/team-a/outside/": 502} {
		if code, body := get(path); code != want {
			t.Errorf("T9.entry-without-stable-address: %s: %d %q, want %d", path, code, body, want)
		}
	}
}
