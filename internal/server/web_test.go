package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWebAppServed checks that the binary serves the embedded app at / with the headers that
// keep it safe (CSP, nosniff) and cheap to revalidate (ETag), and that unknown paths are 404s.
func TestWebAppServed(t *testing.T) {
	ts := startServer(t, nil)
	get := func(path string, hdr ...string) *http.Response {
		req, _ := http.NewRequest("GET", ts.base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	res := get("/")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if !strings.Contains(string(body), "<script type=\"module\"") {
		t.Errorf("index.html has no module script:\n%s", body)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP = %q, want script-src 'self'", csp)
	}
	// connect-src names this server, not every ws:/wss: host.
	want := "connect-src 'self' ws://" + ts.addr + " wss://" + ts.addr + ";"
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, want) || strings.Contains(csp, " ws: ") || strings.Contains(csp, " wss:;") {
		t.Errorf("CSP = %q, want %q and no bare ws:/wss:", csp, want)
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("no nosniff header")
	}
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatalf("no ETag")
	}
	if res := get("/", "If-None-Match", etag); res.StatusCode != http.StatusNotModified {
		t.Errorf("GET / with its ETag = %d, want 304", res.StatusCode)
	}
	if res := get("/js/main.js"); res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), "javascript") {
		t.Errorf("GET /js/main.js = %d %q, want 200 and a JavaScript type (modules need it)", res.StatusCode, res.Header.Get("Content-Type"))
	}
	for _, p := range []string{"/nope.js", "/../go.mod", "/static/index.html"} {
		if res := get(p); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, res.StatusCode)
		}
	}
	// The API keeps its JSON errors; the app's catch-all does not swallow /api/v1.
	if res := get("/api/v1/nope"); res.StatusCode != 404 || !strings.Contains(res.Header.Get("Content-Type"), "json") {
		t.Errorf("GET /api/v1/nope = %d %q, want a JSON 404", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// TestWebE2E drives the web app in headless Chromium through Playwright (web/e2e/e2e.mjs):
// three users in two conversations, typing, ticks, an offline period, and an XSS body, with
// access tokens that expire every 3 s. It needs Node.js, web/e2e/node_modules (npm ci) and
// Chromium; .ci/run installs them. Without them it skips, unless
// PARLEY_TEST_REQUIRE_SERVICES=1.
//
// Screenshots go to $PARLEY_SCREENSHOT_DIR, or a temp dir that is logged.
func TestWebE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the browser test in -short mode")
	}
	dir, err := filepath.Abs("../../web/e2e")
	if err != nil {
		t.Fatal(err)
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Node.js)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		missing = append(missing, "web/e2e/node_modules (run: npm ci --prefix web/e2e)")
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, chromium+" (Debian package chromium, or set CHROMIUM)")
	}
	if len(missing) > 0 {
		msg := "browser test needs " + strings.Join(missing, ", ")
		if os.Getenv("PARLEY_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg + "; PARLEY_TEST_REQUIRE_SERVICES=1 makes that a failure")
		}
		t.Skip("skipping: " + msg)
	}
	shots := os.Getenv("PARLEY_SCREENSHOT_DIR")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "parley-screenshots")
	}
	if shots, err = filepath.Abs(shots); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	// Access tokens that expire every few seconds make the whole run go through the app's
	// transparent refresh (REST calls and WebSocket tickets) many times over.
	ts := startServer(t, func(c *Config) { c.API.AccessTTL = 3 * time.Second })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PARLEY_URL="+ts.base, "SCREENSHOT_DIR="+shots, "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("e2e.mjs output:\n%s", out)
	if err != nil {
		t.Fatalf("e2e.mjs: %v", err)
	}
}
