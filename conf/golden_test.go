package conf

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestGolden loads every broken configuration in testdata and compares the
// error text with its .golden file.
func TestGolden(t *testing.T) {
	// The secrets must come from the files alone.
	t.Setenv(EnvS3SecretKey, "")
	t.Setenv(EnvTelegramToken, "")

	files, err := filepath.Glob(filepath.Join("testdata", "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found %d broken configurations in testdata, want at least 15", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		t.Run(name, func(t *testing.T) {
			cfg, err := Load(file)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, want an error", file, cfg)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Load(%s): %v is a %T, want *conf.Error", file, err, err)
			}
			for _, is := range cerr.Issues {
				if is.Line == 0 && is.Key == "" {
					t.Errorf("issue without key or line: %+v", is)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./conf -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Load(%s) error differs from %s:\n--- got\n%s--- want\n%s", file, golden, got, want)
			}
		})
	}
}
