package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shellBlocks returns the ```sh blocks of a Markdown file, in order.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

// The management API's documented curl examples run, top to bottom, against
// a real sidecar started the quickstart's way, and none of them answers an
// error: docs/api.md stays true.
func TestAPIDocExamplesRun(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	r := start(t, "--data-dir", dir+"/data")
	blocks := shellBlocks(t, "../../docs/api.md")
	if len(blocks) < 8 {
		t.Fatalf("found %d shell blocks in docs/api.md; the parser or the page changed", len(blocks))
	}
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks {
		if i == 0 {
			// The setup block, pointed at this test's sidecar.
			b = strings.ReplaceAll(b, "http://127.0.0.1:4000", r.http)
		}
		script.WriteString(b)
		script.WriteString("echo\necho '--- end of block'\n")
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir // where the quickstart keeps data/master_key
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("examples failed: %v\n%s", err, out.String())
	}
	got := out.String()
	if n := strings.Count(got, "--- end of block"); n != len(blocks) {
		t.Fatalf("ran %d of %d blocks:\n%s", n, len(blocks), got)
	}
	if strings.Contains(got, `"error":`) {
		t.Fatalf("an example answered an error:\n%s", got)
	}
	for _, want := range []string{`"key_alias":"ci-bot"`, `"deleted_keys":["sk-`, `"key":"healthy"`,
		`"team_id":"platform"`, `"deleted_teams":["platform"]`, "carol's key: sk-", `"deleted_users":["carol"]`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
}

// Every flag, and every environment variable it falls back to, is in the
// README's configuration table.
func TestEveryFlagIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var usage bytes.Buffer
	if _, err := parseConfig([]string{"-h"}, envOf(nil), &usage); err != errHelp {
		t.Fatalf("-h: %v", err)
	}
	flags := 0
	for _, line := range strings.Split(usage.String(), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "--"); ok {
			name, _, _ = strings.Cut(name, " ")
			flags++
			if !bytes.Contains(readme, []byte("| `--"+name+"` |")) {
				t.Errorf("flag --%s is not in the README's configuration table", name)
			}
		}
		if _, envs, ok := strings.Cut(line, "[$"); ok {
			envs, _, _ = strings.Cut(envs, "]")
			for _, e := range strings.Split(envs, ", $") {
				if !bytes.Contains(readme, []byte("`"+e+"`")) {
					t.Errorf("environment variable %s is not in the README", e)
				}
			}
		}
	}
	if flags < 20 {
		t.Fatalf("found %d flags in the usage text; the parser or the usage changed", flags)
	}
}

// Every package of the module is in the README's package table.
func TestEveryPackageIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]bool{}
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			rel, _ := filepath.Rel("../..", filepath.Dir(path))
			if rel != "." {
				pkgs[filepath.ToSlash(rel)] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 {
		t.Fatalf("found %d packages; the walk or the tree changed", len(pkgs))
	}
	for p := range pkgs {
		if !bytes.Contains(readme, []byte("`"+p+"`")) {
			t.Errorf("package %s is not in the README's package table", p)
		}
	}
}
