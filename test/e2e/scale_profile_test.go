package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// What the scale bench records beside its latencies, so that a run says
// where the time went: CPU per process, the hub API server's requests by
// resource and verb, and the manager's CPU profile.

// processCPU is the CPU time (seconds) of each named process.
func processCPU(pids map[string]int) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range pids {
		if s, err := cpuSeconds(pid); err == nil {
			out[name] = s
		}
	}
	return out
}

// cpuSeconds is a process's CPU time, user and system, from /proc.
func cpuSeconds(pid int) (float64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	rest := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseFloat(rest[11], 64)
	stime, _ := strconv.ParseFloat(rest[12], 64)
	const clockTicks = 100 // USER_HZ on Linux
	return (utime + stime) / clockTicks, nil
}

// componentNames names each hub component process by its binary.
func componentNames(pids []int) map[string]int {
	out := map[string]int{}
	for _, pid := range pids {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		name := filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0])
		out[name] = pid
	}
	return out
}

// apiRequests reads apiserver_request_total off the API server, summed by
// "verb resource[/subresource]", with the code appended to requests that
// failed (a Conflict is a write paid for twice).
func apiRequests(ctx context.Context, cfg *rest.Config) (map[string]float64, error) {
	counts, _, err := apiMetrics(ctx, cfg)
	return counts, err
}

// apiMetrics reads an API server's request counts, as apiRequests, and
// the seconds it spent serving them, by the same keys.
func apiMetrics(ctx context.Context, cfg *rest.Config) (counts, seconds map[string]float64, err error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	lines, err := metricLines(ctx, hc, strings.TrimSuffix(cfg.Host, "/")+"/metrics")
	if err != nil {
		return nil, nil, err
	}
	counts, seconds = map[string]float64{}, map[string]float64{}
	for _, line := range lines {
		out := counts
		switch {
		case strings.HasPrefix(line, "apiserver_request_total{"):
		case strings.HasPrefix(line, "apiserver_request_duration_seconds_sum{"):
			out = seconds
		default:
			continue
		}
		labels := line[strings.IndexByte(line, '{')+1 : strings.LastIndexByte(line, '}')]
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		if code, _ := strconv.Atoi(l["code"]); code >= 400 {
			key += " " + l["code"]
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		out[key] += v
	}
	return counts, seconds, nil
}

// topDelta lists the n largest increases from before to after, largest
// first, as "count key" lines.
func topDelta(before, after map[string]float64, n int) []string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			all = append(all, kv{k, d})
		}
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.v != b.v {
			if a.v > b.v {
				return -1
			}
			return 1
		}
		return strings.Compare(a.k, b.k)
	})
	var out []string
	for i := range min(n, len(all)) {
		out = append(out, fmt.Sprintf("%.0f %s", all[i].v, all[i].k))
	}
	return out
}

// selfProfile profiles this process (the hollow providers) for d into
// file; the returned func ends it early.
func selfProfile(t *testing.T, file string, d time.Duration) func() {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		t.Log("profiling the hollow providers: ", err)
		return func() {}
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}
	time.AfterFunc(d, stop)
	return stop
}

// cpuProfile takes a CPU profile of the manager over d and returns the
// top of it as text, keeping the profile itself in dir.
func cpuProfile(ctx context.Context, addr, dir string, d time.Duration) string {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds()))
	return fetchProfile(ctx, &http.Client{Timeout: d + time.Minute}, url, filepath.Join(dir, "scale-manager-cpu.pprof"), "-nodecount=30")
}

// apiServerProfile does the same for the hub's API server (its own
// /debug/pprof, on by default), with cumulative times: its flat top is
// the runtime's.
func apiServerProfile(ctx context.Context, cfg *rest.Config, dir string, d time.Duration) string {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err.Error()
	}
	hc.Timeout = d + time.Minute
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cfg.Host, "/"), int(d.Seconds()))
	return fetchProfile(ctx, hc, url, filepath.Join(dir, "scale-apiserver-cpu.pprof"), "-cum", "-nodecount=60")
}

// fetchProfile saves the profile at url into file and returns go tool
// pprof -top of it with args; an error's text when it cannot.
func fetchProfile(ctx context.Context, hc *http.Client, url, file string, args ...string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err.Error()
	}
	_, err = io.Copy(f, resp.Body)
	f.Close()
	if err != nil {
		return err.Error()
	}
	out, err := exec.Command("go", append([]string{"tool", "pprof", "-top"}, append(args, file)...)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return string(out)
}
