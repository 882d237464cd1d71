package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// teardown deletes every cluster under dir, kills any component process that
// survived, and removes dir.
func teardown(dir, bin string, logf func(string, ...any)) error {
	clusters, _ := filepath.Glob(filepath.Join(dir, "clusters", "*"))
	var errs []error
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
		for _, pid := range pids {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
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

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// GC tears down every federation under base whose creating process is gone,
// and returns the folders it removed.
func GC(base string, logf func(string, ...any)) ([]string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dirs, err := filepath.Glob(filepath.Join(base, "fed-*"))
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(RepoRoot(), "bin")
	var removed []string
	var errs []error
	for _, d := range dirs {
		pid, err := readPID(filepath.Join(d, ownerFile))
		if err == nil && alive(pid) {
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
