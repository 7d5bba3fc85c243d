// Package web holds Parley's browser client: plain ES modules, HTML and CSS under static/,
// embedded in the binary so that `parley serve` alone serves a usable chat app at /.
//
// There is deliberately no build step: the files are served exactly as they are in the
// repository, so a fresh clone needs neither Node.js nor a bundler to run the server.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// csp keeps the app to its own origin: scripts and styles only from files it serves (no
// inline script, no eval), so a message body that slipped into the DOM as markup could
// still not run code. connect-src names the server's own WebSocket URLs (cspFor), not any
// ws: or wss: host: injected script could not send what it read anywhere else.
const (
	cspHead = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'"
	cspTail = "; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

// cspFor is the policy for a page served to host (the Host the browser asked for): 'self'
// covers ws: and wss: to the same host only in newer browsers, so they are named too. A Host
// with characters no host name has gets 'self' alone.
func cspFor(host string) string {
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return cspHead + cspTail
		}
	}
	if host == "" {
		return cspHead + cspTail
	}
	return cspHead + " ws://" + host + " wss://" + host + cspTail
}

type asset struct {
	body []byte
	etag string
}

// Handler serves the app. "/" is index.html; other paths are files under static/. Responses
// carry a content-hash ETag and "no-cache", so browsers revalidate cheaply and never run a
// stale module after an upgrade.
func Handler() http.Handler {
	root, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed directive guarantees static/ exists
	}
	assets := map[string]asset{}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		assets["/"+p] = asset{body: b, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := path.Clean(r.URL.Path)
		if p == "/" {
			p = "/index.html"
		}
		a, ok := assets[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", cspFor(r.Host))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		// ServeContent picks the Content-Type from the extension and answers If-None-Match
		// and Range requests.
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(a.body))
	})
}
