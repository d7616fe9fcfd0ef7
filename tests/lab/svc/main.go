// labsvc is a minimal HTTP service for the lab's node tests: it answers /healthz, writes a log file and can
// be told to exit or ignore termination, so the service control manager has a real process to manage.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address:port to listen on")
	logDir := flag.String("log-dir", "", "directory for labsvc.log")
	flag.Parse()
	if *logDir != "" {
		if err := os.MkdirAll(*logDir, 0o755); err == nil {
			f, err := os.OpenFile(filepath.Join(*logDir, "labsvc.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err == nil {
				fmt.Fprintf(f, "started listen=%s env=%s\n", *listen, os.Getenv("LABSVC_GREETING"))
				f.Close()
			}
		}
	}
	start := time.Now()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "{\"status\":\"ok\",\"uptime\":%d}", int(time.Since(start).Seconds()))
	})
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}
