//go:build !windows

package main

import (
	"errors"
	"log"
	"os"
	"os/signal"
	"syscall"
)

// isWindowsService is false off Windows: there is no service control manager to answer.
func isWindowsService() (bool, error) { return false, nil }

func runService(cfg config, logger *log.Logger) error {
	return errors.New("service mode exists only on Windows")
}

// runConsole serves until SIGINT or SIGTERM (what systemd and a terminal send), then stops gracefully.
func runConsole(cfg config, logger *log.Logger) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	srv, err := start(cfg, logger)
	if err != nil {
		return err
	}
	select {
	case err := <-srv.failed:
		return err
	case s := <-sigs:
		logger.Printf("received %v", s)
	}
	if err := srv.stop(cfg.shutdownTimeout); err != nil {
		logger.Printf("warning: %v", err)
	}
	return nil
}
