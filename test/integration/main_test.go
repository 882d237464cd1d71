// Package integration holds envtest suites that need only a hub API server.
package integration

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/flotilla-dev/flotilla/test/hubenv"
)

var env *hubenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = hubenv.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}
