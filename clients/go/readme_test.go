package vaultd

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// codeBlock returns the first fenced block of lang in the README's
// "## Clients" section.
func codeBlock(t *testing.T, readme, lang string) []string {
	t.Helper()
	i := strings.Index(readme, "\n## Clients\n")
	if i < 0 {
		t.Fatal("README.md has no Clients section")
	}
	section := readme[i+1:]
	if j := strings.Index(section[3:], "\n## "); j >= 0 {
		section = section[:j+3]
	}
	start := strings.Index(section, "```"+lang+"\n")
	if start < 0 {
		t.Fatalf("no %s block in the Clients section", lang)
	}
	body := section[start+len("```"+lang+"\n"):]
	end := strings.Index(body, "\n```")
	return strings.Split(body[:end], "\n")
}

// The README's Go service is under 15 lines and compiles against this
// module (built through an overlay, so nothing is written to the tree).
func TestReadmeClientsSnippets(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, lang := range []string{"python", "go"} {
		if n := len(codeBlock(t, readme, lang)); n >= 15 {
			t.Errorf("the README's %s service has %d lines; it should have under 15", lang, n)
		}
	}
	if strings.Contains(readme, "4111111111111111\n```") {
		t.Fatal("a snippet holds a card number")
	}
	snippet := strings.Join(codeBlock(t, readme, "go"), "\n")
	dir := t.TempDir()
	main := "package main\n\nimport (\n\t\"context\"\n\t\"log\"\n)\n\n" + snippet +
		"\n\nfunc main() { _ = checkout(context.Background(), \"\", 12, 2030) }\n"
	mainPath := filepath.Join(dir, "main.go")
	must(t, os.WriteFile(mainPath, []byte(main), 0o644))
	wd, _ := os.Getwd()
	overlay, _ := json.Marshal(map[string]any{"Replace": map[string]string{filepath.Join(wd, "readmesnippet", "main.go"): mainPath}})
	ovl := filepath.Join(dir, "overlay.json")
	must(t, os.WriteFile(ovl, overlay, 0o644))
	cmd := exec.Command(goTool(), "build", "-overlay", ovl, "-o", filepath.Join(dir, "snippet"), "./readmesnippet")
	cmd.Env = append(os.Environ(), "GOPROXY=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's Go service does not compile: %v\n%s", err, out)
	}
}
