package localfed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// A real node is a kubelet with its own containerd, CNI bridge and
// kube-proxy, all in a network namespace of its own, so that several (of
// one federation or of several) share the machine without sharing ports,
// bridges or iptables rules. The processes keep the machine's mount
// namespace: kubelet and containerd must see the same mounts.
//
// Addresses: slot n (1..maxSlots, unique on the machine) has the link
// 10.201.n.0/30 (machine side .1, node side .2) and the pod subnet
// 10.200.n.0/24 behind it, routed by the machine to the node. The API
// servers advertise the machine's own address, which pods reach through
// the node's default route; the machine does not forward (its ip_forward
// stays as it was), the node's namespace does.
//
// Everything a node needs is kept under its folder (nodes/<name> of the
// federation), with the slot it holds, so that teardown works from the
// folder alone, also for a federation whose creator was killed.

const (
	maxSlots      = 200
	sandboxImage  = "docker.io/flotilla/pause:dev"
	cniBinDir     = "/usr/lib/cni"
	cgroupMount   = "/sys/fs/cgroup"
	slotFile      = "slot"
	nodeCgroupFmt = "flotilla-%s"
)

// kernelTunables are the machine-wide sysctls kubelet changes when it
// starts (protectKernelDefaults=false); they are saved before the first
// real node on the machine starts and restored when the last one stops.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// SlotDir is where real-node slots are claimed on this machine; a slot is
// a folder holding the path of the node folder that claimed it.
func SlotDir() string { return filepath.Join(os.TempDir(), "flotilla-nodes") }

// RealNodePrereqs says what is missing for real nodes, or nil.
func RealNodePrereqs(bin string) error {
	var missing []string
	for _, p := range []string{"containerd", "ctr", "runc", "iptables", "ip", "nsenter"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, p := range []string{filepath.Join(cniBinDir, "bridge"), filepath.Join(cniBinDir, "host-local"),
		filepath.Join(bin, "kubelet"), filepath.Join(bin, "kube-proxy")} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		return fmt.Errorf("real nodes need %s: run 'make tools' (as root)", strings.Join(missing, ", "))
	}
	return nil
}

// realNode is one real node of a cluster.
type realNode struct {
	name    string
	dir     string
	slot    int
	cluster *Cluster
}

func (n *realNode) netns() string       { return fmt.Sprintf("flnode-%d", n.slot) }
func (n *realNode) hostLink() string    { return fmt.Sprintf("flh%d", n.slot) }
func (n *realNode) machineSide() string { return fmt.Sprintf("10.201.%d.1", n.slot) }
func (n *realNode) IP() string          { return fmt.Sprintf("10.201.%d.2", n.slot) }
func (n *realNode) podCIDR() string     { return fmt.Sprintf("10.200.%d.0/24", n.slot) }
func (n *realNode) socket() string      { return filepath.Join(n.dir, "containerd.sock") }
func (n *realNode) cgroup() string      { return fmt.Sprintf(nodeCgroupFmt, n.name) }
func (n *realNode) path(p ...string) string {
	return filepath.Join(append([]string{n.dir}, p...)...)
}

// startRealNode starts a real node called name in cluster c, loads images
// into its containerd and waits for the Node to be Ready.
func (c *Cluster) startRealNode(ctx context.Context, name string, images []string) (*realNode, error) {
	start := time.Now()
	// The node's folder is short, under its slot: kubelet and containerd
	// put unix sockets deep inside it, and a socket's path is at most 107
	// bytes. The federation's folder links to it, for teardown.
	link := filepath.Join(c.fed.Dir, "nodes", name)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return nil, err
	}
	slot, err := claimSlot(link)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(SlotDir(), strconv.Itoa(slot), "node")
	for _, d := range []string{"pids", "logs", "cni", "certs", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, slotFile), []byte(strconv.Itoa(slot)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o644); err != nil {
		return nil, err
	}
	if err := os.Symlink(dir, link); err != nil {
		return nil, err
	}
	// A shared mount, so that what kubelet mounts below it reaches
	// containerd's mount namespace.
	if err := run("mount", "--bind", dir, dir); err != nil {
		return nil, err
	}
	if err := run("mount", "--make-shared", dir); err != nil {
		return nil, err
	}
	n := &realNode{name: name, dir: dir, slot: slot, cluster: c}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"network", func(context.Context) error { return n.setupNetwork() }},
		{"cgroups", func(context.Context) error { return n.makeCgroups() }},
		{"containerd", n.startContainerd},
		{"images", func(ctx context.Context) error { return n.loadImages(ctx, images) }},
		{"kubelet", n.startKubelet},
		{"kube-proxy", n.startKubeProxy},
		{"node Ready", n.waitReady},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			return nil, fmt.Errorf("real node %s of %s: %s: %w", name, c.Name, s.what, err)
		}
	}
	c.fed.logf("testbed: real node %s of %s Ready in %s", name, c.Name, time.Since(start).Round(time.Millisecond))
	return n, nil
}

// claimSlot takes the lowest free slot for the node whose link in its
// federation's folder is link, saving the machine's kernel tunables first
// when it is the first slot taken.
func claimSlot(link string) (int, error) {
	base := SlotDir()
	if err := os.MkdirAll(base, 0o755); err != nil {
		return 0, err
	}
	unlock, err := lockSlots()
	if err != nil {
		return 0, err
	}
	defer unlock()
	reapSlots()
	if len(slotsInUse()) == 0 {
		if err := saveTunables(); err != nil {
			return 0, err
		}
	}
	for i := 1; i <= maxSlots; i++ {
		s := filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(s, 0o755); err != nil {
			continue
		}
		return i, os.WriteFile(filepath.Join(s, "owner"), []byte(link), 0o644)
	}
	return 0, fmt.Errorf("all %d real-node slots of this machine are taken (see %s)", maxSlots, base)
}

func lockSlots() (func(), error) {
	f, err := os.OpenFile(filepath.Join(SlotDir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { _ = f.Close() }, nil
}

// slotsInUse lists the slot folders on the machine.
func slotsInUse() []string {
	all, _ := filepath.Glob(filepath.Join(SlotDir(), "[0-9]*"))
	return all
}

// reapSlots frees slots whose federation is gone (its folder removed by
// hand, or a claim interrupted before the link was made).
func reapSlots() {
	for _, s := range slotsInUse() {
		owner, err := os.ReadFile(filepath.Join(s, "owner"))
		if err != nil {
			continue
		}
		if _, err := os.Lstat(string(owner)); errors.Is(err, os.ErrNotExist) {
			_ = stopRealNode(filepath.Join(s, "node"))
			if slot, err := strconv.Atoi(filepath.Base(s)); err == nil {
				_ = deleteSlotNetwork(slot)
			}
			_ = os.RemoveAll(s)
		}
	}
}

func saveTunables() error {
	var b strings.Builder
	for _, k := range kernelTunables {
		v, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
	}
	return os.WriteFile(filepath.Join(SlotDir(), "tunables"), []byte(b.String()), 0o644)
}

// restoreTunables writes back what saveTunables recorded.
func restoreTunables() error {
	path := filepath.Join(SlotDir(), "tunables")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return os.Remove(path)
	}
	return errors.Join(errs...)
}

// ReadTunables returns the machine's current values of the sysctls kubelet
// changes, for tests that check teardown restored them.
func ReadTunables() map[string]string {
	out := map[string]string{}
	for _, k := range kernelTunables {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			out[k] = strings.TrimSpace(string(v))
		}
	}
	return out
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *realNode) inNS(args ...string) error {
	return run("ip", append([]string{"netns", "exec", n.netns()}, args...)...)
}

func (n *realNode) setupNetwork() error {
	ns, host := n.netns(), n.hostLink()
	// A crashed run of the same slot may have left these behind.
	_ = run("ip", "netns", "del", ns)
	_ = run("ip", "link", "del", host)
	cmds := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "addr", "add", n.machineSide() + "/30", "dev", host},
		{"ip", "link", "set", host, "up"},
		{"ip", "route", "add", n.podCIDR(), "via", n.IP()},
	}
	for _, c := range cmds {
		if err := run(c[0], c[1:]...); err != nil {
			return err
		}
	}
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", n.IP() + "/30", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", n.machineSide()},
		// Per namespace: the machine's own forwarding is untouched.
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	} {
		if err := n.inNS(c...); err != nil {
			return err
		}
	}
	return nil
}

// cgroupHierarchies are the cgroup v1 hierarchies mounted on the machine.
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir(cgroupMount)
	var out []string
	for _, e := range entries {
		p := filepath.Join(cgroupMount, e.Name())
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// makeCgroups makes the node's cgroup root in every hierarchy, with a
// "runtime" child for containerd (and so its shims), kubelet and
// kube-proxy: teardown then finds every process of the node there.
func (n *realNode) makeCgroups() error {
	for _, h := range cgroupHierarchies() {
		if err := os.MkdirAll(filepath.Join(h, n.cgroup(), "runtime"), 0o755); err != nil {
			return err
		}
		if strings.HasSuffix(h, "cpuset") {
			// A new cpuset cgroup has no CPUs or memory nodes until given some.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				for _, d := range []string{n.cgroup(), filepath.Join(n.cgroup(), "runtime")} {
					if err := os.WriteFile(filepath.Join(h, d, f), v, 0o644); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// spawn starts a node process in the node's network namespace, in the
// node's runtime cgroup, logging to logs/<name>.log, with its PID in
// pids/<name>.pid.
func (n *realNode) spawn(name, exe string, args ...string) error {
	logf, err := os.OpenFile(n.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + n.netns(), "--", exe}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	for _, h := range cgroupHierarchies() {
		// nsenter execs the program in place, so the PID stays the same.
		_ = os.WriteFile(filepath.Join(h, n.cgroup(), "runtime", "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	}
	return os.WriteFile(n.path("pids", name+".pid"), []byte(strconv.Itoa(pid)), 0o644)
}

func (n *realNode) startContainerd(ctx context.Context) error {
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = %[3]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # Root here lacks CAP_SYS_RESOURCE: an oom_score_adj below the
  # runtime's own cannot be written.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[6]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
`, n.path("containerd", "root"), n.path("containerd", "state"), n.socket(), n.path("containerd", "opt"),
		sandboxImage, n.path("runc"), cniBinDir, n.path("cni"))
	if err := os.WriteFile(n.path("containerd.toml"), []byte(conf), 0o644); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "flotilla", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
`, n.podCIDR(), n.path("cni-ipam"))
	if err := os.WriteFile(n.path("cni", "10-flotilla.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		return err
	}
	// containerd, its shims and the containers get a mount namespace of
	// their own, a slave of the machine's: they see the machine's mounts
	// and the kubelet's volumes (the node folder is a shared mount), while
	// the pods' network namespaces, the CNI cache and the shims' sockets
	// live on tmpfs mounts that die with the namespace, so not even a
	// SIGKILL leaves them on the machine.
	script := fmt.Sprintf("mkdir -p /var/lib/cni /run/netns /run/containerd && "+
		"mount -t tmpfs flotilla-cni /var/lib/cni && mount -t tmpfs flotilla-netns /run/netns && "+
		"mount -t tmpfs flotilla-shims /run/containerd && exec %s --config %s", containerd, n.path("containerd.toml"))
	if err := n.spawn("containerd", "unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script); err != nil {
		return err
	}
	return n.await(ctx, 30*time.Second, "containerd", func() error {
		return run("ctr", "--address", n.socket(), "version")
	})
}

func (n *realNode) loadImages(ctx context.Context, images []string) error {
	for _, img := range images {
		cmd := exec.CommandContext(ctx, "ctr", "--address", n.socket(), "-n", "k8s.io", "images", "import", "--no-unpack", img)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("importing %s: %w: %s", img, err, tail(out, 500))
		}
	}
	return nil
}

// await polls check until it passes, a node process dies, or within ends.
func (n *realNode) await(ctx context.Context, within time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if dead := n.deadProcess(); dead != "" {
			log, _ := os.ReadFile(n.path("logs", dead+".log"))
			return fmt.Errorf("%s exited:\n%s", dead, tail(log, 2000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s: %w", what, within, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (n *realNode) deadProcess() string {
	for _, f := range nodePIDFiles(n.dir) {
		if pid, err := readPID(f); err == nil && !Alive(pid) {
			return strings.TrimSuffix(filepath.Base(f), ".pid")
		}
	}
	return ""
}

func nodePIDFiles(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	return files
}

// nodeKubeconfig writes a kubeconfig for the node's components: the
// cluster's admin credentials, addressed to the machine's own address
// (the node's loopback is its own).
func (n *realNode) nodeKubeconfig() (string, error) {
	cfg, err := clientcmd.LoadFromFile(n.cluster.Kubeconfig)
	if err != nil {
		return "", err
	}
	server, err := n.cluster.MachineURL()
	if err != nil {
		return "", err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	path := n.path("kubeconfig.yaml")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// servingCert issues the kubelet's serving certificate from the cluster's
// CA, naming the node and its address, so that the API server can reach
// the kubelet for logs and exec.
func (n *realNode) servingCert() (certFile, keyFile string, err error) {
	pki := filepath.Join(n.cluster.workdir(), "pki")
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return "", "", err
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(pki, "ca.key"))
	if err != nil {
		return "", "", err
	}
	caBlock, _ := pem.Decode(caPEM)
	keyBlock, _ := pem.Decode(caKeyPEM)
	if caBlock == nil || keyBlock == nil {
		return "", "", errors.New("cluster CA is not PEM")
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return "", "", err
	}
	caKey, err := parseKey(keyBlock.Bytes)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "system:node:" + n.name, Organization: []string{"system:nodes"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{n.name}, IPAddresses: []net.IP{net.ParseIP(n.IP())},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = n.path("certs", "kubelet.crt"), n.path("certs", "kubelet.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func parseKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return x509.ParsePKCS8PrivateKey(der)
}

func (n *realNode) startKubelet(ctx context.Context) error {
	kubeconfig, err := n.nodeKubeconfig()
	if err != nil {
		return err
	}
	cert, key, err := n.servingCert()
	if err != nil {
		return err
	}
	ca := filepath.Join(n.cluster.workdir(), "pki", "ca.crt")
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroups here are hybrid v1 and the machine has no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
containerRuntimeEndpoint: unix://%[2]s
address: %[3]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: %[4]s
tlsPrivateKeyFile: %[5]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[6]s}
authorization: {mode: AlwaysAllow}
failSwapOn: false
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
podLogsDir: %[7]s
volumePluginDir: %[8]s
protectKernelDefaults: false
clusterDomain: cluster.local
enforceNodeAllocatable: [pods]
maxPods: 110
`, n.cgroup(), n.socket(), n.IP(), cert, key, ca, n.path("pod-logs"), n.path("volume-plugins"))
	if err := os.WriteFile(n.path("kubelet.yaml"), []byte(conf), 0o644); err != nil {
		return err
	}
	labels := "flotilla.dev/node-kind=real,kubernetes.io/os=linux,kubernetes.io/arch=amd64"
	if n.cluster.Spec.Region != "" {
		labels += ",topology.kubernetes.io/region=" + n.cluster.Spec.Region
	}
	return n.spawn("kubelet", filepath.Join(n.cluster.fed.bin, "kubelet"),
		"--config", n.path("kubelet.yaml"), "--kubeconfig", kubeconfig,
		"--root-dir", n.path("kubelet"), "--cert-dir", n.path("certs"),
		"--hostname-override", n.name, "--node-ip", n.IP(), "--node-labels", labels, "--v", "1")
}

func (n *realNode) startKubeProxy(ctx context.Context) error {
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %[1]s}
hostnameOverride: %[2]s
mode: iptables
clusterCIDR: %[3]s
# Zeroes leave the machine-wide conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, n.path("kubeconfig.yaml"), n.name, n.podCIDR())
	if err := os.WriteFile(n.path("kube-proxy.yaml"), []byte(conf), 0o644); err != nil {
		return err
	}
	return n.spawn("kube-proxy", filepath.Join(n.cluster.fed.bin, "kube-proxy"), "--config", n.path("kube-proxy.yaml"))
}

func (n *realNode) waitReady(ctx context.Context) error {
	cs, err := n.cluster.Clientset(5 * time.Second)
	if err != nil {
		return err
	}
	return n.await(ctx, 90*time.Second, "node", func() error {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not Ready")
	})
}

// MachineAddress is the machine's own IPv4 address on its default route's
// interface: what API servers advertise and real nodes dial.
func MachineAddress() (string, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return "", err
	}
	iface := ""
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "00000000" {
			iface = f[0]
			break
		}
	}
	var ifaces []net.Interface
	if i, err := net.InterfaceByName(iface); err == nil {
		ifaces = []net.Interface{*i}
	} else if ifaces, err = net.Interfaces(); err != nil {
		return "", err
	}
	for _, i := range ifaces {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "", errors.New("the machine has no non-loopback IPv4 address")
}

// checkRealNodes fails early, before any control plane starts, when real
// nodes are asked for and the machine cannot run them.
func (f *Federation) checkRealNodes() error {
	want := f.Hub.realNodes
	for _, c := range f.Providers {
		want += c.realNodes
	}
	if want == 0 {
		return nil
	}
	if err := RealNodePrereqs(f.bin); err != nil {
		return err
	}
	for _, img := range []string{"pause", "web", "batch", "batch-tampered", "manager", "agent"} {
		if _, err := os.Stat(filepath.Join(f.images, img+".tar")); err != nil {
			return fmt.Errorf("image %s not found in %s: run 'make images' first", img, f.images)
		}
	}
	return nil
}

// startRealNodes starts the cluster's real nodes, named <cluster>-real-<i>.
// SetRealNodesReachable cuts (false) or restores (true) the network of
// each real node of c: its kubelet, containers and node ports vanish from
// the machine's network as a machine switched off would (connections time
// out), while the cluster's control plane runs on.
func (c *Cluster) SetRealNodesReachable(up bool) error {
	for _, name := range c.RealNodes {
		b, err := os.ReadFile(filepath.Join(c.fed.Dir, "nodes", name, slotFile))
		if err != nil {
			return err
		}
		slot, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("real node %s: slot %q: %w", name, b, err)
		}
		n := &realNode{name: name, slot: slot, cluster: c}
		if !up {
			if err := n.inNS("ip", "link", "set", "eth0", "down"); err != nil {
				return err
			}
			c.fed.logf("testbed: real node %s of %s cut off the network", name, c.Name)
			continue
		}
		// Taking the link down dropped the routes through it.
		for _, args := range [][]string{{"ip", "link", "set", "eth0", "up"}, {"ip", "route", "replace", "default", "via", n.machineSide()}} {
			if err := n.inNS(args...); err != nil {
				return err
			}
		}
		if err := run("ip", "route", "replace", n.podCIDR(), "via", n.IP()); err != nil {
			return err
		}
		c.fed.logf("testbed: real node %s of %s back on the network", name, c.Name)
	}
	return nil
}

func (c *Cluster) startRealNodes(ctx context.Context) error {
	batch := "batch.tar"
	if c.Spec.TamperedImages {
		batch = "batch-tampered.tar"
	}
	var images []string
	for _, img := range []string{"pause.tar", "web.tar", batch, "manager.tar", "agent.tar"} {
		images = append(images, filepath.Join(c.fed.images, img))
	}
	for i := 1; i <= c.realNodes; i++ {
		name := fmt.Sprintf("%s-real-%d", c.Name, i)
		if _, err := c.startRealNode(ctx, name, images); err != nil {
			return err
		}
		c.RealNodes = append(c.RealNodes, name)
	}
	return nil
}
