package verifiertest

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// DialFrom is Dial with the connection's source address set to src (for
// example 127.0.0.2: all of 127.0.0.0/8 reaches the loopback interface), so
// tests can run agents from distinct addresses.
func DialFrom(t *testing.T, addr, caFile string, cert *pki.Issued, src string) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	if err := cert.WriteFiles(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	tc, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{CertFile: certFile, KeyFile: keyFile, ServerCAFile: caFile, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// From moves the client to a new connection from source address src; the
// old connection is closed. addr and caFile are the verifier's address and
// CA file, as for NewClient.
func (a *Client) From(addr, caFile, src string) *Client {
	a.t.Helper()
	old := a.Conn
	a.Conn = DialFrom(a.t, addr, caFile, a.Cert, src)
	a.Cl = pulsev1.NewAttestationClient(a.Conn)
	if old != nil {
		old.Close()
	}
	return a
}
