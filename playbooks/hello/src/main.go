// Command hello is fleetctl's example service: a small HTTP service that runs as a native Windows service
// through golang.org/x/sys/windows/svc, or as a console program (how the lab, developers and other platforms
// run it).
//
// Usage: hello -listen ADDR:PORT -log-dir DIR -mode ok|unhealthy|crash-after-Ns [-shutdown-timeout 10s]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is stamped at build time: go build -ldflags "-X main.Version=1.2.3".
var Version = "dev"

const serviceName = "hello"

// mode is the behaviour chosen by configuration; the broken ones exist so rollout tests can ship a release
// that is genuinely bad through its settings alone.
type mode struct {
	name       string
	unhealthy  bool          // /healthz answers 500
	crashAfter time.Duration // >0: the process exits with an error after this long
}

func parseMode(s string) (mode, error) {
	switch {
	case s == "ok":
		return mode{name: s}, nil
	case s == "unhealthy":
		return mode{name: s, unhealthy: true}, nil
	case strings.HasPrefix(s, "crash-after-"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "crash-after-"))
		if err != nil || d <= 0 {
			return mode{}, fmt.Errorf("mode %q: expected crash-after-<duration> such as crash-after-5s", s)
		}
		return mode{name: s, crashAfter: d}, nil
	}
	return mode{}, fmt.Errorf("mode %q: expected ok, unhealthy or crash-after-Ns", s)
}

type config struct {
	listen          string
	logDir          string
	mode            mode
	shutdownTimeout time.Duration // how long in-flight requests get to finish on Stop
}

func parseArgs(args []string) (config, bool, error) {
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address and port to serve HTTP on")
	logDir := fs.String("log-dir", "logs", "directory for hello.log (created if missing)")
	defaultMode := os.Getenv("HELLO_MODE")
	if defaultMode == "" {
		defaultMode = "ok"
	}
	modeName := fs.String("mode", defaultMode, "ok, unhealthy or crash-after-Ns (default from HELLO_MODE)")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second,
		"on Stop, how long in-flight requests may take before connections are closed (keep it below the "+
			"service's stop timeout)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return config{}, false, err
	}
	if *showVersion {
		return config{}, true, nil
	}
	m, err := parseMode(*modeName)
	if err != nil {
		return config{}, false, err
	}
	if *shutdown <= 0 {
		return config{}, false, fmt.Errorf("shutdown-timeout %v: expected a positive duration", *shutdown)
	}
	return config{listen: *listen, logDir: *logDir, mode: m, shutdownTimeout: *shutdown}, false, nil
}

// healthBody is the /healthz answer; fleetctl's health gates read `status` and `version`.
type healthBody struct {
	Status        string  `json:"status"`
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Mode          string  `json:"mode"`
}

func newHandler(cfg config, started time.Time, logger *log.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		body := healthBody{Status: "ok", Version: Version, Mode: cfg.mode.name,
			UptimeSeconds: float64(time.Since(started).Milliseconds()) / 1000}
		code := http.StatusOK
		if cfg.mode.unhealthy {
			body.Status, code = "unhealthy", http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s\n", serviceName, Version)
	})
	return logRequests(mux, logger)
}

func logRequests(next http.Handler, logger *log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.Printf("%s %s %s", r.RemoteAddr, r.Method, r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

func openLog(dir string, console bool) (*log.Logger, io.Closer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "hello.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, err
	}
	var w io.Writer = f
	if console {
		w = io.MultiWriter(f, os.Stderr)
	}
	return log.New(w, "", log.LstdFlags|log.Lmicroseconds), f, nil
}

// server is the HTTP service as a service manager drives it: started once, then stopped on request or
// failed on its own. Both the Windows service handler and the console runners use it.
type server struct {
	http   *http.Server
	addr   string // where it listens (the port chosen when -listen gave :0)
	logger *log.Logger
	failed chan error // receives Serve's error if serving ends without a stop
}

// start listens and serves in the background. In a crash mode it later exits the process abruptly, as a
// crashing service would, so the service manager sees a crash.
func start(cfg config, logger *log.Logger) (*server, error) {
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	s := &server{
		http:   &http.Server{Handler: newHandler(cfg, time.Now(), logger), ReadHeaderTimeout: 10 * time.Second},
		addr:   ln.Addr().String(),
		logger: logger,
		failed: make(chan error, 1),
	}
	go func() {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- err
		}
	}()
	if cfg.mode.crashAfter > 0 {
		time.AfterFunc(cfg.mode.crashAfter, func() {
			logger.Printf("crashing as configured by mode %s", cfg.mode.name)
			os.Exit(3)
		})
	}
	logger.Printf("hello %s listening on %s (mode %s, pid %d)", Version, s.addr, cfg.mode.name, os.Getpid())
	return s, nil
}

// stop shuts down gracefully: no new connections, in-flight requests get `timeout` to finish, then the
// remaining connections are closed. It reports whether the drain finished in time.
func (s *server) stop(timeout time.Duration) error {
	s.logger.Printf("stopping (in-flight requests get %v)", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		_ = s.http.Close()
		return fmt.Errorf("requests still running after %v were cut off: %w", timeout, err)
	}
	return nil
}

func main() {
	cfg, showVersion, err := parseArgs(os.Args[1:])
	if showVersion {
		fmt.Println(Version)
		return
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(2)
	}
	asService, err := isWindowsService()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello: cannot tell whether running as a service:", err)
		os.Exit(1)
	}
	logger, closer, err := openLog(cfg.logDir, !asService)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello: log:", err)
		os.Exit(1)
	}
	defer closer.Close()
	if asService {
		err = runService(cfg, logger)
	} else {
		err = runConsole(cfg, logger)
	}
	if err != nil {
		logger.Printf("error: %v", err)
		closer.Close()
		os.Exit(1)
	}
	logger.Printf("stopped")
}
