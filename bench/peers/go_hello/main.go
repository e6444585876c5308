// go_hello: the Hello responder on Go's standard library net/http/fcgi.
//
// The handler reads the request body to its end and drops it, then answers with the same
// status, headers and body as the other peers. net/http/fcgi adds a Date header of its own;
// it cannot be turned off.
//
// Usage: go_hello unix:PATH | tcp:HOST:PORT
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

var hello = []byte("Hello, world!")

func handle(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	h := w.Header()
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{"13"}
	w.WriteHeader(http.StatusOK)
	w.Write(hello)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s unix:PATH | tcp:HOST:PORT\n", os.Args[0])
		os.Exit(2)
	}
	addr := os.Args[1]
	var ln net.Listener
	var err error
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := addr[5:]
		os.Remove(path)
		ln, err = net.Listen("unix", path)
	case strings.HasPrefix(addr, "tcp:"):
		ln, err = net.Listen("tcp", addr[4:])
	default:
		err = fmt.Errorf("bad address %s", addr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "go_hello: %v\n", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		ln.Close() // also removes a unix socket file
		os.Exit(0)
	}()
	if err := fcgi.Serve(ln, http.HandlerFunc(handle)); err != nil {
		fmt.Fprintf(os.Stderr, "go_hello: %v\n", err)
	}
}
