//go:build windows

package main

// The Windows service side, the way golang.org/x/sys/windows/svc means it to be written: one svc.Handler
// that svc.Run connects to the service control manager, and that debug.Run drives from Ctrl-C in console
// mode; start, stop and error events go to the Windows Event Log through svc/eventlog.

import (
	"errors"
	"fmt"
	"log"
	"syscall"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/debug"
	"golang.org/x/sys/windows/svc/eventlog"
)

// Event IDs written to the Application log under the source "hello".
const (
	eventStarted = 1
	eventStopped = 2
	eventFailed  = 3
	eventWarning = 4
)

// Service-specific exit codes the SCM records (Win32ExitCode ERROR_SERVICE_SPECIFIC_ERROR).
const (
	exitStartFailed = 1 // could not listen
	exitServeFailed = 2 // serving ended without a stop request
)

const startWaitHint = 10 * time.Second

// isWindowsService asks x/sys, which checks that the parent process is services.exe in session 0. It does not
// call the dispatcher to find out: under Wine that call takes ~10 s to fail for a process the SCM did not start.
func isWindowsService() (bool, error) { return svc.IsWindowsService() }

// runService hands the process to the SCM's dispatcher; it returns once the service has stopped.
func runService(cfg config, logger *log.Logger) error {
	elog, err := eventlog.Open(serviceName)
	if err != nil {
		// The service still runs; its log file is then the only record.
		logger.Printf("warning: cannot open the event log as source %q: %v", serviceName, err)
	} else {
		defer elog.Close()
	}
	return svc.Run(serviceName, &helloService{cfg: cfg, logger: logger, elog: elog})
}

// runConsole runs the same handler with debug.Run, which turns Ctrl-C (and the Ctrl-C event Wine makes of
// SIGINT) into a Stop request. Events then go to the log only: the Event Log is for services.
func runConsole(cfg config, logger *log.Logger) error {
	logger.Printf("console mode: not started by the service control manager")
	err := debug.Run(serviceName, &helloService{cfg: cfg, logger: logger})
	var code syscall.Errno
	if errors.As(err, &code) {
		// debug.Run turns the handler's exit code into an Errno, whose text would be a Win32 message.
		return fmt.Errorf("service exit code %d", uint32(code))
	}
	return err
}

// helloService is the svc.Handler.
type helloService struct {
	cfg    config
	logger *log.Logger
	elog   *eventlog.Log // nil in console mode
}

func (h *helloService) event(kind string, id uint32, msg string) {
	h.logger.Printf("%s: %s", kind, msg)
	if h.elog == nil {
		return
	}
	switch kind {
	case "error":
		_ = h.elog.Error(id, msg)
	case "warning":
		_ = h.elog.Warning(id, msg)
	default:
		_ = h.elog.Info(id, msg)
	}
}

// Execute reports StartPending, Running once listening, and answers the SCM until the service has stopped:
// Interrogate with the current status, Stop and Shutdown with StopPending and a graceful HTTP shutdown.
// Status changes go out from the same select that takes requests, so neither side can wedge the other
// (svc.Run's and debug.Run's control goroutines both block until a request is taken), and every status is
// reported before Execute returns.
func (h *helloService) Execute(args []string, requests <-chan svc.ChangeRequest,
	changes chan<- svc.Status) (bool, uint32) {
	changes <- svc.Status{State: svc.StartPending, WaitHint: uint32(startWaitHint / time.Millisecond)}
	srv, err := start(h.cfg, h.logger)
	if err != nil {
		h.event("error", eventFailed, fmt.Sprintf("hello %s failed to start: %v", Version, err))
		return true, exitStartFailed
	}
	current := svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	pending := []svc.Status{current}
	h.event("info", eventStarted, fmt.Sprintf("hello %s started on %s", Version, srv.addr))
	var stopping chan error // set once a stop is under way
	finished := false       // the stop is done: return once every status is out
	for !finished || len(pending) > 0 {
		var out chan<- svc.Status // nil (never ready) while there is nothing to report
		var next svc.Status
		if len(pending) > 0 {
			out, next = changes, pending[0]
		}
		select {
		case out <- next:
			pending = pending[1:]
		case req := <-requests:
			switch req.Cmd {
			case svc.Interrogate:
				pending = append(pending, current)
			case svc.Stop, svc.Shutdown:
				if stopping != nil || finished {
					continue // already stopping
				}
				h.logger.Printf("service control %d: stopping", req.Cmd)
				hint := h.cfg.shutdownTimeout + 2*time.Second
				current = svc.Status{State: svc.StopPending, WaitHint: uint32(hint / time.Millisecond)}
				pending = append(pending, current)
				stopping = make(chan error, 1)
				go func(done chan<- error) { done <- srv.stop(h.cfg.shutdownTimeout) }(stopping)
			default:
				h.event("warning", eventWarning, fmt.Sprintf("unexpected service control request %d", req.Cmd))
			}
		case err := <-srv.failed:
			h.event("error", eventFailed, fmt.Sprintf("hello %s stopped serving: %v", Version, err))
			return true, exitServeFailed
		case err := <-stopping:
			if err != nil {
				h.event("warning", eventWarning, err.Error())
			}
			stopping, finished = nil, true
		}
	}
	h.event("info", eventStopped, fmt.Sprintf("hello %s stopped", Version))
	return false, 0
}
