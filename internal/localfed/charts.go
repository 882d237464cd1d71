package localfed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/join"
)

// Selectors of the charts' pods.
const (
	ManagerSelector = "app.kubernetes.io/name=flotilla-manager"
	AgentSelector   = "app.kubernetes.io/name=flotilla-agent"
)

// onRealNode keeps a chart's pod off kwok's fake nodes, where nothing
// would run it.
const onRealNode = `flotilla\.dev/node-kind=real`

// InstallHubChart installs the hub chart on the hub as an administrator
// would, the manager running as its pod on a real node from the image of
// `make images`; extra are more helm flags (later ones win).
func (f *Federation) InstallHubChart(hubID string, extra ...string) error {
	args := append([]string{"install", "flotilla-hub", filepath.Join(f.root, "charts", "flotilla-hub"),
		"--kubeconfig", f.Hub.Kubeconfig, "-n", flotillav1.SystemNamespace, "--create-namespace",
		"--set", "hubID=" + hubID, "--set", "image.repository=docker.io/flotilla/manager", "--set", "image.tag=dev",
		"--set", "image.pullPolicy=Never", "--set", "manager.providerGracePeriod=10s",
		"--set", "manager.settlementInterval=5s", "--set", "nodeSelector." + onRealNode}, extra...)
	if out, err := exec.Command(filepath.Join(f.bin, "helm"), args...).CombinedOutput(); err != nil {
		return fmt.Errorf("helm install flotilla-hub: %v\n%s", err, tail(out, 2000))
	}
	return nil
}

// JoinWithAgentPod joins c to the hub as its owner would: the
// administrator issues c's join credential on hub (naming c's API server
// at the machine's address, where the hub's pod dials it), the owner
// stores it where the provider chart's agent reads it and installs the
// chart with the agent as a pod on a real node. extra are more helm flags.
// It returns the join credential.
func (c *Cluster) JoinWithAgentPod(ctx context.Context, hub client.Client, hubID string, extra ...string) ([]byte, error) {
	server, err := c.MachineURL()
	if err != nil {
		return nil, err
	}
	hubURL, err := c.fed.Hub.MachineURL()
	if err != nil {
		return nil, err
	}
	hubCfg, err := c.fed.Hub.RESTConfig(10 * time.Second)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(hubCfg.CAFile)
	if err != nil {
		return nil, err
	}
	joinKC, err := join.Issue(ctx, hub, join.Options{Name: c.Name, Owner: c.Spec.Owner, Region: c.Spec.Region,
		APIServerURL: server, Server: hubURL, CAData: ca})
	if err != nil {
		return nil, err
	}
	cs, err := c.Clientset(10 * time.Second)
	if err != nil {
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); client.IgnoreAlreadyExists(err) != nil {
		return nil, err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-hub-join"}, Data: map[string][]byte{"kubeconfig": joinKC}}
	if _, err := cs.CoreV1().Secrets(flotillav1.SystemNamespace).Create(ctx, secret, metav1.CreateOptions{}); client.IgnoreAlreadyExists(err) != nil {
		return nil, err
	}
	// A real node is small: hold nothing back from the Offer.
	args := append([]string{"--set", "agent.enabled=true", "--set", "provider.apiServerURL=" + server,
		"--set", "agent.image.repository=docker.io/flotilla/agent", "--set", "agent.image.tag=dev",
		"--set", "agent.image.pullPolicy=Never", "--set", "offer.reserve.cpu=0", "--set", "offer.reserve.memory=0",
		"--set", "agent.nodeSelector." + onRealNode}, extra...)
	if err := c.InstallProviderChart(hubID, c.Spec.Region, args...); err != nil {
		return nil, err
	}
	return joinKC, nil
}

// AwaitPod waits until a pod of flotilla-system matching selector is
// Ready and returns it; progress, if not nil, hears what it waits on.
func (c *Cluster) AwaitPod(ctx context.Context, selector string, timeout time.Duration, progress func(string)) (*corev1.Pod, error) {
	cs, err := c.Clientset(10 * time.Second)
	if err != nil {
		return nil, err
	}
	var ready *corev1.Pod
	last := "no pod yet"
	err = wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(flotillav1.SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		p := &pods.Items[0]
		last = fmt.Sprintf("%s %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		if progress != nil {
			progress(last)
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s on %s not Ready after %s: %s", selector, c.Name, timeout, last)
	}
	return ready, nil
}
