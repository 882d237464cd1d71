// Command testsummary reads `go test -json` on stdin, prints the usual
// package lines plus the full output of every failed test, and ends with one
// line: "N passed, N failed, N skipped". It exits 1 when anything failed,
// including a package that did not build.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	var passed, failed, skipped int
	var failures []string
	badPackages := map[string]bool{}
	outputs := map[string]*strings.Builder{}
	key := func(e event) string { return e.Package + " " + e.Test }

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for in.Scan() {
		line := in.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Build errors and other non-JSON lines go straight through.
			fmt.Println(string(line))
			continue
		}
		switch e.Action {
		case "output":
			b := outputs[key(e)]
			if b == nil {
				b = &strings.Builder{}
				outputs[key(e)] = b
			}
			b.WriteString(e.Output)
			if e.Test == "" && (strings.HasPrefix(e.Output, "ok ") || strings.HasPrefix(e.Output, "FAIL") ||
				strings.HasPrefix(e.Output, "?") || strings.HasPrefix(e.Output, "---")) {
				fmt.Print(e.Output)
			}
		case "pass":
			if e.Test != "" {
				passed++
			}
			delete(outputs, key(e))
		case "skip":
			if e.Test != "" {
				skipped++
			}
			delete(outputs, key(e))
		case "fail":
			if e.Test == "" {
				badPackages[e.Package] = true
				continue
			}
			failed++
			failures = append(failures, key(e))
			if b := outputs[key(e)]; b != nil {
				fmt.Printf("--- FAIL: %s (%s)\n%s", e.Test, e.Package, b.String())
			}
		}
	}
	// A package that failed without a failing test (build error, panic in
	// TestMain, timeout) still fails the run.
	var broken []string
	for p := range badPackages {
		hasTest := false
		for _, f := range failures {
			if strings.HasPrefix(f, p+" ") {
				hasTest = true
			}
		}
		if !hasTest {
			broken = append(broken, p)
			if b := outputs[p+" "]; b != nil {
				fmt.Printf("=== package %s failed:\n%s", p, b.String())
			}
		}
	}
	sort.Strings(failures)
	sort.Strings(broken)
	if len(failures) > 0 || len(broken) > 0 {
		fmt.Println("\nFailures:")
		for _, f := range failures {
			fmt.Println("  " + f)
		}
		for _, p := range broken {
			fmt.Println("  " + p + " (package failed)")
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed+len(broken), skipped)
	if failed > 0 || len(broken) > 0 {
		os.Exit(1)
	}
}
