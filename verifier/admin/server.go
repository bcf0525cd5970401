package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server is a running admin listener.
type Server struct {
	srv  *http.Server
	lis  net.Listener
	log  hclog.Logger
	done chan struct{}
}

// Listen starts serving h over TLS on addr (host:port; port 0 picks one).
// tlsCfg is normally TLSConfig's result and is required: the admin surface
// is never served in plaintext.
func Listen(addr string, tlsCfg *tls.Config, h http.Handler, log hclog.Logger) (*Server, error) {
	if tlsCfg == nil {
		return nil, errors.New("admin: a TLS configuration is required")
	}
	if h == nil {
		return nil, errors.New("admin: nil handler")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("admin")
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	watch := newHandshakeWatch(h, log)
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			TLSConfig:         tlsCfg.Clone(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			// No WriteTimeout: pprof profile and trace stream for as many
			// seconds as asked.
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: 64 << 10,
			// Refused handshakes are logged (rate-limited) and counted by
			// the ConnState hook; the server's own messages go to debug.
			ErrorLog:  log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
			ConnState: watch.connState,
		},
		lis:  lis,
		log:  log,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(watch.listener(lis), "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "error", err)
		}
	}()
	log.Info("admin listening", "listen", lis.Addr().String())
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Stop stops accepting, waits for requests in flight until ctx is done,
// then closes the remaining connections.
func (s *Server) Stop(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}
