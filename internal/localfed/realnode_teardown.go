package localfed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// teardownRealNode stops every process of the real node whose folder is
// dir and undoes what it changed on the machine: mounts, cgroups, its
// network namespace and link, its slot, and (when it was the machine's
// last real node) the kernel tunables kubelet changed. It works from the
// folder alone.
func teardownRealNode(dir string) error {
	b, slotErr := os.ReadFile(filepath.Join(dir, slotFile))
	errs := []error{stopRealNode(dir)}
	if slotErr == nil {
		slot, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		errs = append(errs, releaseSlot(slot))
	}
	return errors.Join(errs...)
}

// stopRealNode kills the node's processes and removes its mounts, cgroups
// and folder; its slot stays claimed.
func stopRealNode(dir string) error {
	var errs []error
	cg := ""
	if name, err := os.ReadFile(filepath.Join(dir, "name")); err == nil {
		cg = fmt.Sprintf(nodeCgroupFmt, strings.TrimSpace(string(name)))
		// Every process of the node (containerd, its shims, the containers,
		// kubelet, kube-proxy) is in the node's cgroup subtree.
		if left := killCgroupTree(cg, 15*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes of %s survived SIGKILL: %v", dir, left))
		}
	}
	for _, f := range nodePIDFiles(dir) {
		if pid, err := readPID(f); err == nil && Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	if cg != "" {
		if err := removeCgroupTree(cg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// releaseSlot deletes the slot's network namespace and link and frees it;
// the last slot on the machine restores the kernel tunables.
func releaseSlot(slot int) error {
	if slot < 1 || slot > maxSlots {
		return nil
	}
	errs := []error{deleteSlotNetwork(slot)}
	unlock, err := lockSlots()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer unlock()
	if err := os.RemoveAll(filepath.Join(SlotDir(), strconv.Itoa(slot))); err != nil {
		errs = append(errs, err)
	}
	if len(slotsInUse()) == 0 {
		if err := restoreTunables(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteSlotNetwork deletes the slot's network namespace and link.
func deleteSlotNetwork(slot int) error {
	var errs []error
	ns := fmt.Sprintf("flnode-%d", slot)
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	// The link goes with the namespace; one left by a half-made node does not.
	if _, err := os.Stat(filepath.Join("/sys/class/net", fmt.Sprintf("flh%d", slot))); err == nil {
		_ = run("ip", "link", "del", fmt.Sprintf("flh%d", slot))
	}
	return errors.Join(errs...)
}

// cgroupProcs lists the processes in cgroup cg and below, in any hierarchy.
func cgroupProcs(cg string) []int {
	var pids []int
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, cg), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killCgroupTree SIGKILLs the processes of cg until none is left (a
// process may fork while its siblings die) and returns those that remain.
func killCgroupTree(cg string, within time.Duration) []int {
	deadline := time.Now().Add(within)
	for {
		var alive []int
		for _, pid := range cgroupProcs(cg) {
			if Alive(pid) {
				alive = append(alive, pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeCgroupTree removes cg and its children in every hierarchy, deepest first.
func removeCgroupTree(cg string) error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, cg), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			// An emptied cgroup can stay busy for a moment.
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// MountsUnder lists the mount points at or below dir, deepest first.
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMount decodes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unmountUnder(dir string) error {
	var errs []error
	for range 3 {
		mps := MountsUnder(dir)
		if len(mps) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
			}
		}
	}
	if left := MountsUnder(dir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("mounts left under %s: %v", dir, left))
	}
	return errors.Join(errs...)
}
