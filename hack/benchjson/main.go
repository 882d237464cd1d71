// Command benchjson turns `go test -bench` output on stdin into JSON: one
// object per benchmark with every reported metric (ns/op, B/op, allocs/op and
// custom ones such as replicas/s). It echoes the input so the run stays
// readable, and writes the JSON to the file named by -o.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type result struct {
	Name       string             `json:"name"`
	Package    string             `json:"package,omitempty"`
	Iterations int64              `json:"iterations"`
	Metrics    map[string]float64 `json:"metrics"`
}

type report struct {
	Date       string   `json:"date"`
	GoVersion  string   `json:"goVersion"`
	CPU        string   `json:"cpu,omitempty"`
	GOMAXPROCS string   `json:"gomaxprocs,omitempty"`
	Results    []result `json:"results"`
}

func main() {
	out := flag.String("o", "", "file to write the JSON report to")
	flag.Parse()
	rep := report{Date: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), GOMAXPROCS: os.Getenv("GOMAXPROCS")}
	pkg := ""
	failed := false
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line := in.Text()
		fmt.Println(line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "cpu: "):
			rep.CPU = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "--- FAIL"):
			failed = true
		case strings.HasPrefix(line, "Benchmark"):
			if r, ok := parse(line); ok {
				r.Package = pkg
				rep.Results = append(rep.Results, r)
			}
		}
	}
	if *out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("wrote %d results to %s\n", len(rep.Results), *out)
	}
	if failed {
		os.Exit(1)
	}
}

// parse reads "BenchmarkName-2   3   123 ns/op   45 B/op ...".
func parse(line string) (result, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return result{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return result{}, false
	}
	r := result{Name: f[0], Iterations: n, Metrics: map[string]float64{}}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return result{}, false
		}
		r.Metrics[f[i+1]] = v
	}
	return r, true
}
