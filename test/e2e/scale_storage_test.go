package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hub's storage, as the scale bench sees it: the API server's waits
// on etcd and etcd's own disk, so that a burst of timed-out requests can
// be told from a slow disk.

// histogram is a Prometheus histogram summed over its label sets.
type histogram struct {
	buckets    map[float64]float64 // cumulative count by upper bound
	sum, count float64
}

// readHistogram reads the histogram name out of metric lines.
func readHistogram(lines []string, name string) histogram {
	h := histogram{buckets: map[float64]float64{}}
	for _, line := range lines {
		rest, ok := strings.CutPrefix(line, name+"_")
		if !ok {
			continue
		}
		kind, _, _ := strings.Cut(rest, "{")
		kind, _, _ = strings.Cut(kind, " ")
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		switch kind {
		case "bucket":
			_, le, ok := strings.Cut(line, `le="`)
			if !ok {
				continue
			}
			le, _, _ = strings.Cut(le, `"`)
			bound, err := strconv.ParseFloat(le, 64)
			if err == nil {
				h.buckets[bound] += v
			}
		case "sum":
			h.sum += v
		case "count":
			h.count += v
		}
	}
	return h
}

// minus is what h counted after before.
func (h histogram) minus(before histogram) histogram {
	d := histogram{buckets: map[float64]float64{}, sum: h.sum - before.sum, count: h.count - before.count}
	for le, n := range h.buckets {
		d.buckets[le] = n - before.buckets[le]
	}
	return d
}

// bound is the upper bound of the bucket the q-th quantile falls in: -1
// beyond the largest finite bucket (JSON has no infinity), 0 when empty.
func (h histogram) bound(q float64) float64 {
	if h.count <= 0 {
		return 0
	}
	for _, le := range slices.Sorted(func(yield func(float64) bool) {
		for le := range h.buckets {
			if !yield(le) {
				return
			}
		}
	}) {
		if h.buckets[le] >= q*h.count {
			if math.IsInf(le, 1) {
				break
			}
			return le
		}
	}
	return -1
}

func (h histogram) mean() float64 {
	if h.count <= 0 {
		return 0
	}
	return h.sum / h.count
}

// latency is a histogram's summary over a time, in seconds.
type latency struct {
	N    int     `json:"n"`
	Mean float64 `json:"meanSeconds"`
	P99  float64 `json:"p99UpperBoundSeconds"`
	// Slowest is the upper bound of the highest bucket anything fell in
	// (-1 beyond the largest finite bucket).
	Slowest float64 `json:"slowestUpperBoundSeconds"`
}

func (h histogram) summary() latency {
	l := latency{N: int(h.count), Mean: h.mean(), P99: h.bound(0.99)}
	if h.count > 0 {
		l.Slowest = h.bound(1)
	}
	return l
}

// storageLatency is the placement's waits on storage: the API server's
// requests to etcd, and etcd's disk syncs and commits.
type storageLatency struct {
	APIServerToEtcd latency `json:"apiServerToEtcd"`
	WALFsync        latency `json:"etcdWALFsync"`
	BackendCommit   latency `json:"etcdBackendCommit"`
}

// storageMetrics are the metric lines of the hub API server and of etcd.
type storageMetrics struct{ api, etcd []string }

func scrapeStorage(ctx context.Context, api *http.Client, apiURL, etcdURL string) storageMetrics {
	var m storageMetrics
	m.api, _ = metricLines(ctx, api, apiURL)
	if etcdURL != "" {
		m.etcd, _ = metricLines(ctx, http.DefaultClient, etcdURL)
	}
	return m
}

func (m storageMetrics) since(before storageMetrics) storageLatency {
	d := func(lines, prev []string, name string) latency {
		return readHistogram(lines, name).minus(readHistogram(prev, name)).summary()
	}
	return storageLatency{
		APIServerToEtcd: d(m.api, before.api, "etcd_request_duration_seconds"),
		WALFsync:        d(m.etcd, before.etcd, "etcd_disk_wal_fsync_duration_seconds"),
		BackendCommit:   d(m.etcd, before.etcd, "etcd_disk_backend_commit_duration_seconds"),
	}
}

// metricLines reads a metrics endpoint once, line by line.
func metricLines(ctx context.Context, hc *http.Client, url string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// etcdMetricsURL is the metrics endpoint of the etcd process pid, from
// the client address on its command line; "" when it has none.
func etcdMetricsURL(pid int) string {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	for arg := range strings.SplitSeq(string(cmd), "\x00") {
		if urls, ok := strings.CutPrefix(arg, "--listen-client-urls="); ok {
			first, _, _ := strings.Cut(urls, ",")
			return strings.TrimSuffix(first, "/") + "/metrics"
		}
	}
	return ""
}

func TestReadHistogram(t *testing.T) {
	before := []string{
		`# TYPE etcd_request_duration_seconds histogram`,
		`etcd_request_duration_seconds_bucket{operation="get",type="leases",le="0.005"} 90`,
		`etcd_request_duration_seconds_bucket{operation="get",type="leases",le="0.1"} 100`,
		`etcd_request_duration_seconds_bucket{operation="get",type="leases",le="+Inf"} 100`,
		`etcd_request_duration_seconds_sum{operation="get",type="leases"} 1`,
		`etcd_request_duration_seconds_count{operation="get",type="leases"} 100`,
		`etcd_request_duration_seconds_other 7`,
		`etcd_request_duration_seconds_total_bucket{le="0.005"} 1000`,
	}
	after := append(slices.Clone(before[:1]),
		`etcd_request_duration_seconds_bucket{operation="get",type="leases",le="0.005"} 190`,
		`etcd_request_duration_seconds_bucket{operation="get",type="leases",le="0.1"} 200`,
		`etcd_request_duration_seconds_bucket{operation="get",type="leases",le="+Inf"} 200`,
		`etcd_request_duration_seconds_sum{operation="get",type="leases"} 2`,
		`etcd_request_duration_seconds_count{operation="get",type="leases"} 200`,
		`etcd_request_duration_seconds_bucket{operation="update",type="leases",le="0.005"} 0`,
		`etcd_request_duration_seconds_bucket{operation="update",type="leases",le="0.1"} 0`,
		`etcd_request_duration_seconds_bucket{operation="update",type="leases",le="+Inf"} 100`,
		`etcd_request_duration_seconds_sum{operation="update",type="leases"} 300`,
		`etcd_request_duration_seconds_count{operation="update",type="leases"} 100`,
	)
	const name = "etcd_request_duration_seconds"
	for _, tc := range []struct {
		what string
		h    histogram
		want latency
	}{
		{"nothing", readHistogram(nil, name), latency{}},
		{"one label set", readHistogram(before, name), latency{N: 100, Mean: 0.01, P99: 0.1, Slowest: 0.1}},
		{"label sets summed, beyond the last bucket", readHistogram(after, name), latency{N: 300, Mean: 302.0 / 300, P99: -1, Slowest: -1}},
		{"only what came after", readHistogram(after, name).minus(readHistogram(before, name)), latency{N: 200, Mean: 301.0 / 200, P99: -1, Slowest: -1}},
		{"a quiet interval", readHistogram(before, name).minus(readHistogram(before, name)), latency{}},
	} {
		if got := tc.h.summary(); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.what, got, tc.want)
		}
	}
	if got := readHistogram(after, name).minus(readHistogram(before, name)).bound(0.4); got != 0.005 {
		t.Errorf("p40 of what came after: got %v, want 0.005", got)
	}
}
