package main

import (
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  mode
		error bool
	}{
		{in: "ok", want: mode{name: "ok"}},
		{in: "unhealthy", want: mode{name: "unhealthy", unhealthy: true}},
		{in: "crash-after-5s", want: mode{name: "crash-after-5s", crashAfter: 5 * time.Second}},
		{in: "crash-after-", error: true},
		{in: "crash-after-0s", error: true},
		{in: "bogus", error: true},
	} {
		got, err := parseMode(tc.in)
		if (err != nil) != tc.error || (!tc.error && got != tc.want) {
			t.Errorf("parseMode(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestParseArgsDefaultsAndShutdownTimeout(t *testing.T) {
	t.Setenv("HELLO_MODE", "unhealthy")
	cfg, _, err := parseArgs(nil)
	if err != nil || cfg.mode.name != "unhealthy" || cfg.shutdownTimeout != 10*time.Second {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	if _, _, err := parseArgs([]string{"-shutdown-timeout", "0s"}); err == nil {
		t.Fatal("a zero shutdown timeout was accepted")
	}
}

func quietLogger() *log.Logger { return log.New(io.Discard, "", 0) }

func TestServerAnswersHealthzAndStopsGracefully(t *testing.T) {
	cfg := config{listen: "127.0.0.1:0", mode: mode{name: "ok"}, shutdownTimeout: 5 * time.Second}
	srv, err := start(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var body healthBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body.Status != "ok" {
		t.Fatalf("healthz: %d %+v %v", resp.StatusCode, body, err)
	}
	resp.Body.Close()
	if err := srv.stop(cfg.shutdownTimeout); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := http.Get("http://" + srv.addr + "/healthz"); err == nil {
		t.Fatal("still serving after stop")
	}
}

// A request that outlives the shutdown timeout is cut off, and stop says so instead of waiting on.
func TestStopCutsOffRequestsAfterTheTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})
	srv := &server{http: &http.Server{Handler: slow}, logger: quietLogger(), failed: make(chan error, 1)}
	go srv.http.Serve(ln)
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the handler")
	}
	began := time.Now()
	err = srv.stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "cut off") {
		t.Fatalf("stop = %v, want the cut-off error", err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("stop took %v", took)
	}
}
