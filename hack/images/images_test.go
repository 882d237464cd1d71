// Package images holds the programs of the local federation's images; this
// test checks that `make images` is reproducible.
package images

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImagesAreReproducible builds every image twice into separate folders
// and compares the digests: the same sources must give the same images.
func TestImagesAreReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every image twice")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	build := func() map[string]string {
		dir := t.TempDir()
		cmd := exec.Command(filepath.Join(root, "hack", "images.sh"))
		cmd.Env = append(os.Environ(), "IMAGES_DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("hack/images.sh: %v\n%s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(dir, "digests"))
		if err != nil {
			t.Fatal(err)
		}
		digests := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || !strings.HasPrefix(f[2], "sha256:") {
				t.Fatalf("digests line %q: want NAME REF sha256:...", line)
			}
			digests[f[0]] = f[2]
		}
		return digests
	}
	a, b := build(), build()
	for _, name := range []string{"manager", "agent", "web", "batch", "batch-tampered", "pause"} {
		if a[name] == "" || a[name] != b[name] {
			t.Errorf("image %s: digests %q and %q, want one non-empty digest", name, a[name], b[name])
		}
	}
	if a["batch"] == a["batch-tampered"] {
		t.Errorf("the tampered batch image has the honest digest %s", a["batch"])
	}
}
