package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzAdminRequest sends arbitrary paths, bodies and session cookies through
// the authenticated handler: it must never panic, answer only with the
// statuses the API documents, and never pass a malformed approval or address
// to the backend.
func FuzzAdminRequest(f *testing.F) {
	end := time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	f.Add("POST", "/api/v1/updates", `{"digest":"`+strings.Repeat("ab", 32)+`","agents":["edge-*"],"end":"`+end+`"}`, "")
	f.Add("POST", "/api/v1/release", `{"address":"10.0.0.66"}`, "")
	f.Add("POST", "/api/v1/alerts/a-2/ack", `{}`, "")
	f.Add("GET", "/api/v1/alerts?open=1&agent=edge-3&limit=5", "", "")
	f.Add("GET", "/api/v1/agents/edge-1", "", "1772409600.AAAA")
	f.Add("GET", "/?token=x", "", "")
	f.Fuzz(func(t *testing.T, method, target, body, session string) {
		if method != "GET" && method != "POST" {
			method = "GET"
		}
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") || strings.HasPrefix(target, "//") {
			return
		}
		fx := newFixture(t, testToken)
		r, err := http.NewRequest(method, "https://admin.test"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		r.TLS = tlsState
		r.RemoteAddr = "192.0.2.1:1234"
		r.Header.Set("Content-Type", "application/json")
		if c := (&http.Cookie{Name: SessionCookie, Value: session}); session != "" && c.Valid() == nil {
			r.AddCookie(c)
		} else {
			r.Header.Set("Authorization", "Bearer "+testToken)
		}
		w := httptest.NewRecorder()
		fx.h.ServeHTTP(w, r)
		switch w.Code {
		case 200, 201, 303, 400, 401, 403, 404, 405, 409:
		default:
			if !(w.Code == 301 || w.Code == 307) { // ServeMux path cleaning
				t.Fatalf("%s %s: status %d", method, target, w.Code)
			}
		}
		for _, u := range fx.be.approvals {
			if len(u.Digest) != 64 || strings.Trim(u.Digest, "0123456789abcdef") != "" || len(u.Agents) == 0 || !u.End.After(u.Start) || u.By != TokenPrincipal {
				t.Fatalf("backend got approval %+v", u)
			}
		}
		for _, rel := range fx.be.releases {
			if _, err := canonicalAddress(rel[0]); err != nil || rel[1] != TokenPrincipal {
				t.Fatalf("backend got release %v", rel)
			}
		}
		if strings.Contains(fx.logs.String(), testToken) {
			t.Fatal("token logged")
		}
	})
}

// FuzzAdminSession: only values minted by the token's key open a session.
func FuzzAdminSession(f *testing.F) {
	ta, err := newTokenAuth(testToken, nil, time.Hour, time.Now)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := ta.newSession("")
	f.Add(good)
	f.Add("99999999999." + strings.Repeat("A", 43))
	f.Add(".")
	f.Fuzz(func(t *testing.T, v string) {
		if _, ok := ta.checkSession(v); ok && v != good {
			// Another valid value must carry a MAC for its own expiry.
			exp, sig, _ := strings.Cut(v, ".")
			if ta.token("").sessionMAC(exp) != sig {
				t.Fatalf("forged session %q accepted", v)
			}
		}
	})
}
