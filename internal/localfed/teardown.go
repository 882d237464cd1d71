package localfed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// teardown deletes every cluster under dir, kills any component process that
// survived, and removes dir.
func teardown(dir, bin string, logf func(string, ...any)) error {
	var errs []error
	// Real nodes first: their pods die with them, and their kubelets must
	// not outlive the API servers they report to.
	nodes, _ := filepath.Glob(filepath.Join(dir, "nodes", "*"))
	for _, link := range nodes {
		target, err := os.Readlink(link)
		if err != nil {
			continue
		}
		if err := teardownRealNode(target); err != nil {
			errs = append(errs, err)
		}
	}
	clusters, _ := filepath.Glob(filepath.Join(dir, "clusters", "*"))
	for _, c := range clusters {
		// A frozen apiserver ignores SIGTERM until continued.
		pids := componentPIDs(c)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := runKwokctl(ctx, dir, bin, "delete", "cluster", "--name", filepath.Base(c)); err != nil {
			errs = append(errs, err)
		}
		cancel()
		// kwokctl signals the components without waiting for them; a
		// straggler gets SIGKILL so that no port or process outlives Close.
		if !waitGone(pids, 10*time.Second) {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if !waitGone(pids, 5*time.Second) {
				errs = append(errs, fmt.Errorf("processes of %s survived SIGKILL: %v", c, pids))
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	logf("testbed: removed %s", dir)
	if len(errs) > 0 {
		return fmt.Errorf("tearing down %s: %w", dir, errors.Join(errs...))
	}
	return nil
}

func componentPIDs(clusterDir string) []int {
	files, _ := filepath.Glob(filepath.Join(clusterDir, "pids", "*.pid"))
	var pids []int
	for _, f := range files {
		if pid, err := readPID(f); err == nil && pid > 1 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Alive reports a running process; a zombie (exited, not yet reaped by its
// parent) holds no ports or files and counts as gone.
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

func waitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, pid := range pids {
			if Alive(pid) {
				left++
			}
		}
		if left == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// GC tears down every federation under base whose creating process is gone,
// and returns the folders it removed.
func GC(base string, logf func(string, ...any)) ([]string, error) {
	return gc(base, filepath.Join(FindRoot(), "bin"), logf)
}

func gc(base, bin string, logf func(string, ...any)) ([]string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dirs, err := filepath.Glob(filepath.Join(base, "fed-*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, d := range dirs {
		pid, err := readPID(filepath.Join(d, OwnerFile))
		if err == nil && Alive(pid) {
			continue
		}
		// A federation being created has no owner file for a moment.
		if st, serr := os.Stat(d); err != nil && serr == nil && time.Since(st.ModTime()) < time.Minute {
			continue
		}
		if err := teardown(d, bin, logf); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, d)
	}
	return removed, errors.Join(errs...)
}

// Teardown deletes the federation in dir, kills any process of it left and
// removes the folder; for federations made with New by a process that has
// exited (the demo).
func Teardown(dir string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return teardown(dir, filepath.Join(FindRoot(), "bin"), logf)
}
