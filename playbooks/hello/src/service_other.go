//go:build !windows

package main

import (
	"errors"
	"log"
)

// isWindowsService is false off Windows: there is no service control manager to answer.
func isWindowsService() (bool, error) { return false, nil }

func runService(name string, cfg config, logger *log.Logger) error {
	return errors.New("service mode exists only on Windows")
}
