// console is a plain console HTTP program with no service control manager code at all, the kind of exe that
// fleetctl hosts with NSSM (tests/rollout/test_nssm_rollout.py). It prints to stdout, answers JSON on /, and
// exits after -exit-after when asked (to exercise NSSM's restarts).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"
)

var Version = "dev"

func main() {
	listen := flag.String("listen", "127.0.0.1:8181", "address:port")
	greeting := flag.String("greeting", "", "what / reports")
	exitAfter := flag.Duration("exit-after", 0, "exit with code 3 after this long (0: never)")
	flag.Parse()
	fmt.Printf("console %s started greeting=%s env=%s\n", Version, *greeting, os.Getenv("CONSOLE_ENV"))
	if *exitAfter > 0 {
		time.AfterFunc(*exitAfter, func() { os.Exit(3) })
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok", "greeting": *greeting, "version": Version})
	})
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
