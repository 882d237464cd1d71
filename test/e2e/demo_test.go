package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/batchdigest"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// libraryLog matches what a library prints on its own: klog headers,
// controller-runtime's warning, Go stack traces, API warnings.
var libraryLog = regexp.MustCompile(`^[IWEF]\d{4} \d\d:|log\.SetLogger|^goroutine \d|\.go:\d+ \+0x|^\s+/.*\.go:\d+|^Warning: `)

// renderDigest is what the render sample's copies compute.
var renderDigest = batchdigest.Compute("render-frames 1-240", batchdigest.DefaultRounds)

// TestDemo runs the demo as `make demo` does (`flotillactl local up`),
// non-interactively, checks what it printed (for a person: no library
// logs or stack traces) and left running, and that `flotillactl local
// down` removes every process and file it made.
func TestDemo(t *testing.T) {
	root := hubenv.RepoRoot()
	build := exec.Command("go", "build", "-o", filepath.Join(root, "bin")+"/", "./cmd/...")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the commands: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "demo")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "bin", "flotillactl"), append([]string{"local"}, args...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("demo %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	down := func() { run("down", "--dir", dir) }
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
			down()
		}
	})

	out := run("up", "--dir", dir)
	for _, want := range []string{
		"web 6/6 ready; render-frames Succeeded; train Succeeded",
		"bob-1 Ready; 0 stale namespaces left there",
		"copies on distinct owners agree on " + renderDigest,
		"team-a/web            Service  Ready      6/6        alice-1:3,carol-1:3",
		"team-b/render-frames  Batch    Succeeded  ",
		"team-b/train          Batch    Succeeded  1/1 done",
		"ACCOUNT",
		"applied Account team-a/default",
		"export KUBECONFIG=",
		"flotillactl local down",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
	// The home lab behind NAT joined in pull mode and is Ready.
	if !regexp.MustCompile(`dave-1\s+dave\s+home\s+Pull\s+Ready`).MatchString(out) {
		t.Errorf("the demo's status does not show dave-1 Ready in pull mode:\n%s", out)
	}
	// Where real nodes can run (root, `make tools images`), the demo uses
	// them: the web sample really answers and the copies really compute.
	if localfed.RealNodePrereqs(filepath.Join(root, "bin")) == nil {
		for _, want := range []string{"each with a real node", "web answered from", "hello from workload-", "manager runs as its pod"} {
			if !strings.Contains(out, want) {
				t.Errorf("the demo on real nodes lacks %q:\n%s", want, out)
			}
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if libraryLog.MatchString(line) {
			t.Errorf("the demo printed a library's log line or stack trace: %q", line)
		}
	}

	// It left a working federation: the GPU job went to carol, web runs
	// its six replicas once, none of them on the provider that was stopped.
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Kubeconfig string `json:"kubeconfig"`
		PIDs       []int  `json:"pids"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := client.New(cfg, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	var ls flotillav1.LeaseList
	if err := hub.List(t.Context(), &ls); err != nil {
		t.Fatal(err)
	}
	web := map[string]int32{}
	trainOn := ""
	for _, l := range ls.Items {
		switch l.Spec.WorkloadRef.Name {
		case "web":
			if l.Status.Phase != flotillav1.LeaseClosed {
				web[l.Spec.ProviderRef.Name] += l.Spec.Replicas
			}
		case "train":
			trainOn = l.Spec.ProviderRef.Name
		}
	}
	if trainOn != "carol-1" {
		t.Errorf("the GPU job ran on %q, want carol-1", trainOn)
	}
	if web["bob-1"] != 0 || web["alice-1"]+web["carol-1"] != 6 {
		t.Errorf("web's live replicas by provider: %v, want 6 on alice-1 and carol-1", web)
	}
	for _, pid := range st.PIDs {
		if syscall.Kill(pid, 0) != nil {
			t.Errorf("process %d of the demo is not running", pid)
		}
	}

	down()
	for _, pid := range st.PIDs {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still runs after demo down", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after demo down: %v", dir, err)
	}
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes of the demo left after demo down: %s", out)
	}
}
