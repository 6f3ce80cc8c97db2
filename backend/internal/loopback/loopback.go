// Package loopback starts the in-process fakes' HTTP servers on 127.0.0.1.
package loopback

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
)

// NewServer starts handler on 127.0.0.1 and a free port. Not
// httptest.NewServer: it may fall back to [::1] or obey the
// -httptest.serve flag, and the fakes promise 127.0.0.1. It panics when it
// cannot listen, as httptest does; who names the caller in that panic.
func NewServer(who string, handler http.Handler) *httptest.Server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("%s: listening on 127.0.0.1: %v", who, err))
	}
	srv := httptest.NewUnstartedServer(handler)
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	return srv
}
