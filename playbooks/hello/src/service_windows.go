//go:build windows

package main

// The service control manager protocol over advapi32 through syscall: golang.org/x/sys/windows/svc is not
// available offline, and the part we need is three calls and two callbacks.

import (
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

var (
	advapi32                          = syscall.NewLazyDLL("advapi32.dll")
	procStartServiceCtrlDispatcherW   = advapi32.NewProc("StartServiceCtrlDispatcherW")
	procRegisterServiceCtrlHandlerExW = advapi32.NewProc("RegisterServiceCtrlHandlerExW")
	procSetServiceStatus              = advapi32.NewProc("SetServiceStatus")
)

const (
	serviceWin32OwnProcess = 0x10

	serviceStopped      = 1
	serviceStartPending = 2
	serviceStopPending  = 3
	serviceRunning      = 4

	serviceAcceptStop     = 0x1
	serviceAcceptShutdown = 0x4

	serviceControlStop        = 1
	serviceControlInterrogate = 4
	serviceControlShutdown    = 5

	errorCallNotImplemented   = 120
	errorServiceSpecificError = 1066
)

// serviceStatus is SERVICE_STATUS.
type serviceStatus struct {
	ServiceType             uint32
	CurrentState            uint32
	ControlsAccepted        uint32
	Win32ExitCode           uint32
	ServiceSpecificExitCode uint32
	CheckPoint              uint32
	WaitHint                uint32
}

// serviceTableEntry is SERVICE_TABLE_ENTRYW.
type serviceTableEntry struct {
	ServiceName *uint16
	ServiceProc uintptr
}

// Callbacks are a limited resource in the runtime: create each once.
var (
	serviceMainCallback = syscall.NewCallback(serviceMain)
	ctlHandlerCallback  = syscall.NewCallback(ctlHandler)
)

// svc is the one service this process hosts (SERVICE_WIN32_OWN_PROCESS); the SCM's callbacks carry no
// Go state, so they find it here.
var svc struct {
	name   string
	cfg    config
	logger *log.Logger
	stop   chan struct{}
	once   sync.Once
	err    error

	mu         sync.Mutex
	handle     uintptr
	checkPoint uint32
}

// isWindowsService tells whether the SCM started this process, the way x/sys's IsWindowsService does: the
// parent is services.exe. Asking the dispatcher instead costs ~10 s under Wine before it fails.
func isWindowsService() (bool, error) {
	ppid := uint32(os.Getppid())
	snap, err := syscall.CreateToolhelp32Snapshot(syscall.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		return false, fmt.Errorf("CreateToolhelp32Snapshot: %w", err)
	}
	defer syscall.CloseHandle(snap)
	var entry syscall.ProcessEntry32
	entry.Size = uint32(unsafe.Sizeof(entry))
	err = syscall.Process32First(snap, &entry)
	for err == nil {
		if entry.ProcessID == ppid {
			return strings.EqualFold(syscall.UTF16ToString(entry.ExeFile[:]), "services.exe"), nil
		}
		err = syscall.Process32Next(snap, &entry)
	}
	if err == syscall.ERROR_NO_MORE_FILES {
		return false, nil // parent gone or not listed (Wine): not started by the SCM
	}
	return false, fmt.Errorf("Process32Next: %w", err)
}

// runService hands this thread to the SCM's dispatcher; it returns once the service has stopped.
func runService(name string, cfg config, logger *log.Logger) error {
	svc.name, svc.cfg, svc.logger = name, cfg, logger
	svc.stop = make(chan struct{})
	namep, err := syscall.UTF16PtrFromString(name)
	if err != nil {
		return err
	}
	table := []serviceTableEntry{{ServiceName: namep, ServiceProc: serviceMainCallback}, {}}
	r, _, callErr := procStartServiceCtrlDispatcherW.Call(uintptr(unsafe.Pointer(&table[0])))
	if r == 0 {
		return fmt.Errorf("StartServiceCtrlDispatcherW: %w", callErr)
	}
	return svc.err
}

func setStatus(state, accepted, exitCode uint32) {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	st := serviceStatus{ServiceType: serviceWin32OwnProcess, CurrentState: state, ControlsAccepted: accepted}
	if state == serviceStartPending || state == serviceStopPending {
		// Pending states must show progress, or the SCM decides the service hung.
		svc.checkPoint++
		st.CheckPoint, st.WaitHint = svc.checkPoint, 15000
	}
	if exitCode != 0 {
		st.Win32ExitCode, st.ServiceSpecificExitCode = errorServiceSpecificError, exitCode
	}
	if r, _, err := procSetServiceStatus.Call(svc.handle, uintptr(unsafe.Pointer(&st))); r == 0 {
		svc.logger.Printf("SetServiceStatus(%d): %v", state, err)
	}
}

// serviceMain is LPSERVICE_MAIN_FUNCTIONW, run by the dispatcher on its own thread.
func serviceMain(argc, argv uintptr) uintptr {
	namep, _ := syscall.UTF16PtrFromString(svc.name)
	h, _, err := procRegisterServiceCtrlHandlerExW.Call(uintptr(unsafe.Pointer(namep)), ctlHandlerCallback, 0)
	if h == 0 {
		svc.err = fmt.Errorf("RegisterServiceCtrlHandlerExW: %w", err)
		return 0
	}
	svc.handle = h
	setStatus(serviceStartPending, 0, 0)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- serve(svc.cfg, svc.logger, started, svc.stop) }()
	select {
	case <-started:
		setStatus(serviceRunning, serviceAcceptStop|serviceAcceptShutdown, 0)
		svc.err = <-done
	case svc.err = <-done:
	}
	var code uint32
	if svc.err != nil {
		svc.logger.Printf("service error: %v", svc.err)
		code = 1
	}
	setStatus(serviceStopped, 0, code)
	return 0
}

// ctlHandler is LPHANDLER_FUNCTION_EX: the SCM's Stop/Shutdown/Interrogate requests.
func ctlHandler(control, eventType, eventData, context uintptr) uintptr {
	switch control {
	case serviceControlStop, serviceControlShutdown:
		svc.once.Do(func() {
			svc.logger.Printf("service control %d: stopping", control)
			setStatus(serviceStopPending, 0, 0)
			close(svc.stop)
		})
		return 0
	case serviceControlInterrogate:
		return 0
	}
	return errorCallNotImplemented
}
