package admin

import (
	"context"
	"embed"
	"net/http"
)

// The dashboard: one HTML page, its script and its stylesheet, embedded so
// the verifier serves them with no external resources (the Content Security
// Policy allows only this origin).
//
//go:embed web/index.html web/app.js web/app.css web/explorer.html web/explorer.js web/explorer.css
//go:embed web/vendor/uplot/uPlot.iife.min.js web/vendor/uplot/uPlot.min.css web/vendor/uplot/LICENSE
var webFS embed.FS

type staticFile struct {
	body        []byte
	contentType string
}

var static = map[string]staticFile{
	"app.js":  {mustRead("web/app.js"), "text/javascript; charset=utf-8"},
	"app.css": {mustRead("web/app.css"), "text/css; charset=utf-8"},
	// The fleet explorer's pages (explorer.go).
	"explorer.js":  {mustRead("web/explorer.js"), "text/javascript; charset=utf-8"},
	"explorer.css": {mustRead("web/explorer.css"), "text/css; charset=utf-8"},
}

// vendor are the pinned third-party files (web/vendor/uplot/VERSION),
// served with their licence.
var vendor = map[string]staticFile{
	"uPlot.iife.min.js": {mustRead("web/vendor/uplot/uPlot.iife.min.js"), "text/javascript; charset=utf-8"},
	"uPlot.min.css":     {mustRead("web/vendor/uplot/uPlot.min.css"), "text/css; charset=utf-8"},
	"LICENSE":           {mustRead("web/vendor/uplot/LICENSE"), "text/plain; charset=utf-8"},
}

var explorerHTML = mustRead("web/explorer.html")

func serveVendor(w http.ResponseWriter, r *http.Request) {
	f, ok := vendor[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(f.body)
}

var indexHTML = mustRead("web/index.html")

func mustRead(name string) []byte {
	b, err := webFS.ReadFile(name)
	if err != nil {
		panic("admin: embedded " + name + ": " + err.Error())
	}
	return b
}

func (h *handler) dashboard(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(indexHTML)
}

func serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := static[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(f.body)
}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// PrincipalFrom returns the operator authenticated for a request handled by
// the admin handler.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

func principalFrom(ctx context.Context) Principal {
	p, _ := PrincipalFrom(ctx)
	return p
}
