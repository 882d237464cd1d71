// Package testbed starts local federations (internal/localfed) for tests,
// torn down however the test ends.
package testbed

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/internal/localfed"
)

// NewForTest starts a federation that is closed when the test ends, when
// the test binary is interrupted, and shortly before the test's deadline (a
// `go test -timeout` panic would otherwise skip cleanup).
func NewForTest(t testing.TB, opts localfed.Options) *localfed.Federation {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	f, err := localfed.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting testbed: %v", err)
	}
	// Logging through t after the test ended panics; teardown logs go nowhere.
	f.SetLogf(nil)

	done := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var deadline <-chan time.Time
	if dt, ok := deadlineOf(t); ok {
		timer := time.NewTimer(time.Until(dt) - 15*time.Second)
		t.Cleanup(func() { timer.Stop() })
		deadline = timer.C
	}
	go func() {
		select {
		case <-done:
		case <-sigs:
			_ = f.Close()
			os.Exit(130)
		case <-deadline:
			_ = f.Close()
		}
	}()
	t.Cleanup(func() {
		close(done)
		signal.Stop(sigs)
		if err := f.Close(); err != nil {
			t.Errorf("tearing down testbed: %v", err)
		}
	})
	return f
}

func deadlineOf(t testing.TB) (time.Time, bool) {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		return d.Deadline()
	}
	return time.Time{}, false
}

// RequireRealNodes fails the test when this machine cannot run real nodes,
// saying what is missing; FLOTILLA_SKIP_REAL_NODES=1 skips it instead, for
// machines without root.
func RequireRealNodes(t testing.TB) {
	t.Helper()
	err := localfed.RealNodePrereqs(filepath.Join(localfed.RepoRoot(), "bin"))
	if err == nil {
		return
	}
	if os.Getenv("FLOTILLA_SKIP_REAL_NODES") == "1" {
		t.Skipf("FLOTILLA_SKIP_REAL_NODES=1: %v", err)
	}
	t.Fatal(err)
}
