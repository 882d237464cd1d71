package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/flotilla-dev/flotilla/internal/batchdigest"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// machineState is what a federation with real nodes may change on the
// machine; teardown must bring every part of it back.
type machineState struct {
	Tunables map[string]string
	Netns    []string
	CNICache []string
	// ShimSockets are what containerd's shims leave when killed.
	ShimSockets []string
	Links       []string
	Cgroups     []string
	Slots       []string
	Processes   []string
}

func readMachineState(t *testing.T, base string) machineState {
	t.Helper()
	s := machineState{Tunables: localfed.ReadTunables()}
	s.Netns, _ = filepath.Glob("/run/netns/*")
	s.CNICache, _ = filepath.Glob("/var/lib/cni/results/*")
	s.ShimSockets, _ = filepath.Glob("/run/containerd/s/*")
	s.Links, _ = filepath.Glob("/sys/class/net/flh*")
	s.Cgroups, _ = filepath.Glob("/sys/fs/cgroup/*/flotilla-*")
	s.Slots, _ = filepath.Glob(filepath.Join(localfed.SlotDir(), "[0-9]*"))
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, base) {
			s.Processes = append(s.Processes, filepath.Base(filepath.Dir(p))+": "+cmd)
		}
	}
	return s
}

// TestRealNodes starts a federation whose provider has a real node, runs
// the built images on it (the web server answers the test over HTTP; the
// batch program computes its digest in the container), and tears it down;
// twice, checking each time that nothing of it is left on the machine.
func TestRealNodes(t *testing.T) {
	RequireRealNodes(t)
	base := t.TempDir()
	before := readMachineState(t, base)
	for round := 1; round <= 2; round++ {
		t.Run(fmt.Sprintf("round %d", round), func(t *testing.T) {
			fed, err := localfed.New(context.Background(), localfed.Options{
				BaseDir: base, Logf: t.Logf,
				Providers: []localfed.ProviderSpec{{Name: "erin-1", Owner: "erin", Region: "eu-west", RealNodes: 1}},
			})
			if err != nil {
				t.Fatal(err)
			}
			dir := fed.Dir
			defer func() {
				if err := fed.Close(); err != nil {
					t.Errorf("teardown: %v", err)
				}
				if left := append(localfed.MountsUnder(dir), localfed.MountsUnder(localfed.SlotDir())...); len(left) > 0 {
					t.Errorf("mounts left after teardown: %v", left)
				}
				if after := readMachineState(t, base); !equalState(before, after) {
					t.Errorf("machine changed by a federation with real nodes:\nbefore %+v\nafter  %+v", before, after)
				}
			}()
			cs, err := fed.Provider("erin-1").Clientset(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			webAnswers(t, cs)
			batchDigest(t, cs)
		})
	}
}

func equalState(a, b machineState) bool {
	return fmt.Sprint(a.Tunables) == fmt.Sprint(b.Tunables) && slices.Equal(a.Netns, b.Netns) && slices.Equal(a.CNICache, b.CNICache) && slices.Equal(a.ShimSockets, b.ShimSockets) &&
		slices.Equal(a.Links, b.Links) && slices.Equal(a.Cgroups, b.Cgroups) &&
		slices.Equal(a.Slots, b.Slots) && len(b.Processes) == 0
}

// webAnswers runs the web image and fetches its answer from the pod's address.
func webAnswers(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", Image: "docker.io/flotilla/web:dev", ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		}},
	}}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	var pod corev1.Pod
	hubenv.Await(t, 90*time.Second, "the web pod Running with an address", func() (bool, string) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Sprint(err)
		}
		pod = pods.Items[0]
		return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "", fmt.Sprintf("%s %s", pod.Status.Phase, podWhy(pod))
	})
	t.Logf("web pod Running %s after creation", time.Since(created).Round(time.Millisecond))
	var body string
	hubenv.Await(t, 30*time.Second, "an HTTP answer from the web pod", func() (bool, string) {
		var err error
		body, err = localfed.AskWeb(pod.Status.PodIP, 2*time.Second)
		return err == nil, fmt.Sprintf("%q %v", body, err)
	})
	if want := "hello from " + pod.Name; body != want {
		t.Errorf("web answered %q, want %q", body, want)
	}
}

// batchDigest runs the batch image as a Job and checks the digest its
// container computed, read from the termination message.
func batchDigest(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "digest", Namespace: "default"}, Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](0),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "work", Image: "docker.io/flotilla/batch:dev", ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{{Name: "INPUT", Value: "frames 1-240"}, {Name: "ROUNDS", Value: "3"}}}},
		}},
	}}
	if _, err := cs.BatchV1().Jobs("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	hubenv.Await(t, 90*time.Second, "the batch pod's digest", func() (bool, string) {
		var err error
		got, err = terminationMessages(ctx, cs, "digest")
		return err == nil && len(got) == 1, fmt.Sprint(got, err)
	})
	if want := batchdigest.Compute("frames 1-240", 3); got[0] != want {
		t.Errorf("batch digest %q, want %q", got[0], want)
	}
}

func podWhy(p corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			return w.Reason + ": " + w.Message
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			return string(c.Type) + ": " + c.Message
		}
	}
	return ""
}
