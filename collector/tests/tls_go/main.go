// A Go crypto/tls HTTP/1.1 server and client for collector/tests/tls.rs.
//
//	tls_go server PORT CERT KEY      prints "ready" once it listens; serves /ok "ok",
//	                                  /delay "delayed" after 10 ms, /big 10 MiB, else 404
//	                                  "not found" (the bodies of the tests' other servers)
//	tls_go client [--new] URL PATH…   one keep-alive connection (or a new one per request);
//	                                  prints "STATUS BODYLEN" per request
//	tls_go server-h2 PORT CERT KEY   the same server with HTTP/2 (Go's default over TLS)
//	tls_go client-h2 URL PATH…       the same client over HTTP/2 (one connection); prints
//	                                  "STATUS BODYLEN PROTO" per request
//	tls_go timed PORT PATH N          N requests on one crypto/tls connection, without
//	                                  net/http's client (its own work around the reads and
//	                                  writes no collector can see); prints "STATUS BODYLEN
//	                                  SECONDS" per request (from before the request is
//	                                  written to the end of its body)
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	switch os.Args[1] {
	case "server":
		serve(os.Args[2], os.Args[3], os.Args[4], false)
	case "server-h2":
		serve(os.Args[2], os.Args[3], os.Args[4], true)
	case "client-h2":
		clientH2(os.Args[2], os.Args[3:])
	case "timed":
		timed(os.Args[2], os.Args[3], os.Args[4])
	case "client":
		args := os.Args[2:]
		fresh := false
		if args[0] == "--new" {
			fresh, args = true, args[1:]
		}
		client(fresh, args[0], args[1:])
	}
}

func serve(port, cert, key string, h2 bool) {
	big := bytes.Repeat([]byte("x"), 10<<20)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		status, body := http.StatusOK, []byte("ok")
		switch r.URL.Path {
		case "/ok":
		case "/delay":
			time.Sleep(10 * time.Millisecond)
			body = []byte("delayed")
		case "/big":
			body = big
		default:
			status, body = http.StatusNotFound, []byte("not found")
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(status)
		w.Write(body)
	})
	// HTTP/1.1 only: an empty TLSNextProto turns Go's default HTTP/2 over TLS off.
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	if h2 {
		srv.TLSNextProto = nil
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	if err := srv.ServeTLS(ln, cert, key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func client(fresh bool, base string, paths []string) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives: fresh,
	}
	c := &http.Client{Transport: tr}
	for _, p := range paths {
		r, err := c.Get(base + p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		r.Body.Close()
		fmt.Println(r.StatusCode, n)
	}
	tr.CloseIdleConnections()
}

func clientH2(base string, paths []string) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}
	c := &http.Client{Transport: tr}
	for _, p := range paths {
		r, err := c.Get(base + p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		r.Body.Close()
		fmt.Println(r.StatusCode, n, r.Proto)
	}
	tr.CloseIdleConnections()
}

func timed(port, path, count string) {
	n, _ := strconv.Atoi(count)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rd := bufio.NewReader(conn)
	request := []byte("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n\r\n")
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, err := conn.Write(request); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r, err := http.ReadResponse(rd, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Println(r.StatusCode, len(body), time.Since(t).Seconds())
	}
	conn.Close()
}
