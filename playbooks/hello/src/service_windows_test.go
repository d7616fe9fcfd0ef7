//go:build windows

package main

import (
	"bytes"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/windows/svc"
)

// TestMain also lets this test binary be the service itself: registered with a service control manager as
// `hello.test.exe -as-service -listen ... -log-dir ...`, it runs runService (svc.Run, the event log, the handler)
// without asking svc.IsWindowsService first. Wine's services.exe runs in session 1, not 0, so under Wine that
// check says console mode even for a process the SCM started; this is how tests reach svc.Run there.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-as-service" {
		cfg, _, err := parseArgs(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "hello.test:", err)
			os.Exit(2)
		}
		logger, closer, err := openLog(cfg.logDir, false)
		if err != nil {
			os.Exit(1)
		}
		defer closer.Close()
		if err := runService(cfg, logger); err != nil {
			logger.Printf("error: %v", err)
			os.Exit(1)
		}
		logger.Printf("stopped")
		return
	}
	os.Exit(m.Run())
}

// syncBuffer is a log destination the handler's goroutines and the test may share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type exit struct {
	specific bool
	code     uint32
}

// drive runs Execute as svc.Run would: requests in, status changes out, the exit code at the end.
func drive(t *testing.T, cfg config) (chan<- svc.ChangeRequest, <-chan svc.Status, <-chan exit, *syncBuffer) {
	t.Helper()
	requests, changes, done := make(chan svc.ChangeRequest), make(chan svc.Status), make(chan exit, 1)
	logs := &syncBuffer{}
	h := &helloService{cfg: cfg, logger: log.New(logs, "", 0)}
	go func() {
		specific, code := h.Execute([]string{serviceName}, requests, changes)
		done <- exit{specific, code}
	}()
	return requests, changes, done, logs
}

func next(t *testing.T, changes <-chan svc.Status) svc.Status {
	t.Helper()
	select {
	case s := <-changes:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no status change within 10 s")
	}
	return svc.Status{}
}

func TestHandlerReportsRunningAnswersInterrogateAndStopsGracefully(t *testing.T) {
	requests, changes, done, logs := drive(t, config{listen: "127.0.0.1:0", mode: mode{name: "ok"},
		shutdownTimeout: 5 * time.Second})
	if s := next(t, changes); s.State != svc.StartPending {
		t.Fatalf("first status %+v, want StartPending", s)
	}
	running := next(t, changes)
	if running.State != svc.Running || running.Accepts != svc.AcceptStop|svc.AcceptShutdown {
		t.Fatalf("second status %+v, want Running accepting Stop and Shutdown", running)
	}
	requests <- svc.ChangeRequest{Cmd: svc.Interrogate, CurrentStatus: running}
	if s := next(t, changes); s != running {
		t.Fatalf("Interrogate answered %+v, want %+v", s, running)
	}
	requests <- svc.ChangeRequest{Cmd: svc.Stop}
	// A second Stop while stopping (a second Ctrl-C) is taken without blocking and without a second shutdown.
	select {
	case requests <- svc.ChangeRequest{Cmd: svc.Stop}:
	case <-time.After(10 * time.Second):
		t.Fatal("a second Stop was not taken")
	}
	stopping := next(t, changes)
	if stopping.State != svc.StopPending || stopping.WaitHint < 5000 {
		t.Fatalf("after Stop: %+v, want StopPending with a wait hint covering the shutdown timeout", stopping)
	}
	select {
	case e := <-done:
		if e != (exit{false, 0}) {
			t.Fatalf("exit %+v, want a clean stop", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return after Stop")
	}
	if got := logs.String(); strings.Count(got, "stopping (in-flight") != 1 || !strings.Contains(got, "info: hello") {
		t.Fatalf("log:\n%s", got)
	}
}

func TestHandlerShutdownIsAnsweredLikeStop(t *testing.T) {
	requests, changes, done, _ := drive(t, config{listen: "127.0.0.1:0", mode: mode{name: "ok"},
		shutdownTimeout: time.Second})
	next(t, changes)
	next(t, changes)
	requests <- svc.ChangeRequest{Cmd: svc.Shutdown}
	if s := next(t, changes); s.State != svc.StopPending {
		t.Fatalf("after Shutdown: %+v", s)
	}
	if e := <-done; e != (exit{false, 0}) {
		t.Fatalf("exit %+v", e)
	}
}

func TestHandlerFailsWithAServiceSpecificCodeWhenItCannotListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, changes, done, logs := drive(t, config{listen: busy.Addr().String(), mode: mode{name: "ok"},
		shutdownTimeout: time.Second})
	next(t, changes)
	select {
	case e := <-done:
		if e != (exit{true, exitStartFailed}) {
			t.Fatalf("exit %+v, want service-specific %d", e, exitStartFailed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return")
	}
	if !strings.Contains(logs.String(), "error: hello") || !strings.Contains(logs.String(), "failed to start") {
		t.Fatalf("log:\n%s", logs.String())
	}
}
