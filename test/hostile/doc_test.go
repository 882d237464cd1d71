package hostile

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/test/hubenv"
)

var (
	caseInCode  = regexp.MustCompile(`"([PT][1-9]\.[a-z0-9][a-z0-9-]*)`)
	caseInDoc   = regexp.MustCompile("(?m)^\\| `([PT][1-9]\\.[a-z0-9][a-z0-9-]*)` \\|")
	countsInDoc = regexp.MustCompile(`There are (\d+) provider cases and (\d+) tenant cases`)
)

// TestSecurityDocListsEveryCase keeps docs/security.md and the hostile
// suites in step: every case id a test plays is listed there, every listed
// one is played, and the counts it states are right.
func TestSecurityDocListsEveryCase(t *testing.T) {
	root := hubenv.RepoRoot()
	inCode := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == "hack" || rel == "bin" || strings.HasPrefix(d.Name(), ".")) && rel != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") || filepath.Base(path) == "doc_test.go" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range caseInCode.FindAllStringSubmatch(string(src), -1) {
			inCode[m[1]] = append(inCode[m[1]], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	inDoc := map[string]bool{}
	providers, tenants := 0, 0
	for _, m := range caseInDoc.FindAllStringSubmatch(string(doc), -1) {
		if inDoc[m[1]] {
			t.Errorf("docs/security.md lists %s twice", m[1])
		}
		inDoc[m[1]] = true
		if m[1][0] == 'P' {
			providers++
		} else {
			tenants++
		}
	}
	for id, where := range inCode {
		if !inDoc[id] {
			t.Errorf("%s is played by %v but not listed in docs/security.md", id, slices.Compact(where))
		}
	}
	for id := range inDoc {
		if _, ok := inCode[id]; !ok {
			t.Errorf("docs/security.md lists %s, which no test plays", id)
		}
	}
	m := countsInDoc.FindStringSubmatch(string(doc))
	if m == nil {
		t.Fatal("docs/security.md does not state how many provider and tenant cases there are")
	}
	if p, _ := strconv.Atoi(m[1]); p != providers {
		t.Errorf("docs/security.md says %d provider cases and lists %d", p, providers)
	}
	if n, _ := strconv.Atoi(m[2]); n != tenants {
		t.Errorf("docs/security.md says %d tenant cases and lists %d", n, tenants)
	}
	if len(inDoc) < 100 {
		t.Errorf("only %d cases found: the patterns no longer match the doc", len(inDoc))
	}
}
