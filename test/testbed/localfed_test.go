package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

func smokeProviders() []localfed.ProviderSpec {
	return []localfed.ProviderSpec{
		{Name: "alice-1", Owner: "alice", Region: "eu-west", Nodes: []localfed.NodeSet{{Count: 2, CPU: "8", Memory: "32Gi"}}},
		{Name: "bob-1", Owner: "bob", Region: "us-east", Nodes: []localfed.NodeSet{{Count: 1, CPU: "16", Memory: "64Gi"}}, WrongDigest: lie},
		{Name: "carol-1", Owner: "carol", Region: "eu-west", Nodes: []localfed.NodeSet{{Count: 1, CPU: "8", Memory: "64Gi", GPU: 2,
			Labels: map[string]string{"gpu-model": "a100"}}}},
	}
}

var (
	truth = "sha256:" + strings.Repeat("1", 64)
	lie   = "sha256:" + strings.Repeat("f", 64)
)

// resultJob is a one-pod Job whose pod asks the testbed to report result.
func resultJob(name, result string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{localfed.ResultAnnotation: result}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{
				{Name: "work", Image: "registry.example/work:1"}, {Name: "sidecar", Image: "registry.example/side:1"},
			}},
		}},
	}
}

// terminationMessages returns the message of each container of the Job's
// succeeded pod, once there is one.
func terminationMessages(ctx context.Context, cs kubernetes.Interface, job string) ([]string, error) {
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded {
			continue
		}
		var out []string
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Terminated == nil {
				return nil, fmt.Errorf("container %s of succeeded pod %s not terminated", c.Name, p.Name)
			}
			out = append(out, c.State.Terminated.Message)
		}
		return out, nil
	}
	return nil, nil
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "registry.example/app:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
				}}},
			},
		},
	}
}

func runningPods(ctx context.Context, cs kubernetes.Interface, app string) ([]string, error) {
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// waitFor adapts a condition that reports its last error to hubenv.Await.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	hubenv.Await(t, timeout, what, func() (bool, string) {
		ok, err := cond()
		return ok, fmt.Sprint("last error: ", err)
	})
}

func TestFederationSmoke(t *testing.T) {
	ctx := context.Background()
	f := NewForTest(t, localfed.Options{Providers: smokeProviders()})

	if _, err := os.Stat(f.Hub.Kubeconfig); err != nil {
		t.Fatalf("hub kubeconfig: %v", err)
	}
	clients := map[string]*kubernetes.Clientset{}
	for _, p := range f.Providers {
		cs, err := p.Clientset(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		clients[p.Name] = cs
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, s := range p.Spec.Nodes {
			want += max(s.Count, 1)
		}
		if len(nodes.Items) != want {
			t.Fatalf("%s has %d nodes, want %d", p.Name, len(nodes.Items), want)
		}
		if p.Name == "carol-1" {
			gpu := nodes.Items[0].Status.Allocatable["nvidia.com/gpu"]
			if gpu.Value() != 2 || nodes.Items[0].Labels["gpu-model"] != "a100" {
				t.Fatalf("carol-1 node: gpu %s, labels %v", gpu.String(), nodes.Items[0].Labels)
			}
		}
		if _, err := cs.AppsV1().Deployments("default").Create(ctx, deployment("web", 3), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string][]string{}
	for name, cs := range clients {
		waitFor(t, 60*time.Second, "3 running pods on "+name, func() (bool, error) {
			pods, err := runningPods(ctx, cs, "web")
			before[name] = pods
			return len(pods) == 3, err
		})
	}

	t.Run("Job pods complete with the result asked for, or a lying provider's", func(t *testing.T) {
		for name, want := range map[string]string{"alice-1": truth, "bob-1": lie} {
			cs := clients[name]
			if _, err := cs.BatchV1().Jobs("default").Create(ctx, resultJob("result", truth), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := cs.BatchV1().Jobs("default").Create(ctx, resultJob("silent", ""), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			var msgs []string
			waitFor(t, 60*time.Second, "the result job to succeed on "+name, func() (bool, error) {
				var err error
				msgs, err = terminationMessages(ctx, cs, "result")
				return msgs != nil, err
			})
			if len(msgs) != 2 || msgs[0] != want || msgs[1] != "" {
				t.Errorf("%s: termination messages %q, want %q on the first container only", name, msgs, want)
			}
			waitFor(t, 60*time.Second, "the silent job to succeed on "+name, func() (bool, error) {
				var err error
				msgs, err = terminationMessages(ctx, cs, "silent")
				return msgs != nil, err
			})
			if msgs[0] != "" {
				t.Errorf("%s: a pod without the annotation reported %q", name, msgs[0])
			}
		}
	})

	t.Run("Stop refuses connections and Start brings the pods back", func(t *testing.T) {
		p := f.Provider("alice-1")
		if err := p.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := clients["alice-1"].Discovery().ServerVersion()
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("stopped provider: want connection refused, got %v", err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 60*time.Second, "alice-1 to answer with its pods", func() (bool, error) {
			pods, err := runningPods(ctx, clients["alice-1"], "web")
			return err == nil && equal(pods, before["alice-1"]), err
		})
	})

	t.Run("Freeze makes requests hang until the client timeout", func(t *testing.T) {
		p := f.Provider("bob-1")
		short, err := p.Clientset(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Freeze(); err != nil {
			t.Fatal(err)
		}
		_, err = short.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		var netErr net.Error
		if err == nil || !(errors.As(err, &netErr) && netErr.Timeout()) {
			t.Fatalf("frozen provider: want a client timeout, got %v", err)
		}
		// The other providers are unaffected.
		if _, err := clients["carol-1"].CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
			t.Fatalf("carol-1 while bob-1 is frozen: %v", err)
		}
		if err := p.Thaw(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "bob-1 to answer after Thaw", func() (bool, error) {
			_, err := short.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err == nil, err
		})
	})

	t.Run("an abandoned federation is reaped with all its processes", func(t *testing.T) {
		var pids []int
		for _, c := range append(f.Providers, f.Hub) {
			pids = append(pids, c.PIDs()...)
		}
		if len(pids) < 4*5 {
			t.Fatalf("found %d component processes, want at least 20", len(pids))
		}
		// Pretend the creator died: point the owner file at a finished process.
		dead := exec.Command("true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.Dir, localfed.OwnerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		removed, err := localfed.GC(filepath.Dir(f.Dir), t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		if !contains(removed, f.Dir) {
			t.Fatalf("GC removed %v, want %s", removed, f.Dir)
		}
		for _, pid := range pids {
			if localfed.Alive(pid) {
				t.Errorf("process %d survived teardown", pid)
			}
		}
		if _, err := os.Stat(f.Dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists after teardown", f.Dir)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Two federations at once must not share folders, ports or clusters.
func TestParallelFederations(t *testing.T) {
	hosts := make(chan string, 2)
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"one", "two"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				f := NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{{Name: "p", Nodes: []localfed.NodeSet{{CPU: "4", Memory: "8Gi"}}}}})
				cfg, err := f.Provider("p").RESTConfig(10 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				cs := kubernetes.NewForConfigOrDie(cfg)
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-" + name}}
				if _, err := cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				list, err := cs.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range list.Items {
					if n.Name == "only-one" && name == "two" || n.Name == "only-two" && name == "one" {
						t.Errorf("federation %s sees namespace %s of the other federation", name, n.Name)
					}
				}
				hosts <- cfg.Host
			})
		}
	})
	close(hosts)
	var got []string
	for h := range hosts {
		got = append(got, h)
	}
	if len(got) != 2 || got[0] == got[1] {
		t.Fatalf("want two distinct provider endpoints, got %v", got)
	}
}
