package migrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Create writes the next numbered pair of empty migration files into dir
// (created if missing) for a migration called name, and returns their paths.
// The version is one more than the highest version already in dir, written
// with at least four digits so that a plain directory listing is in
// migration order. name is lower-cased and every run of characters other
// than letters and digits becomes one underscore ("Add key owner" →
// "add_key_owner").
//
// Sequential versions rather than timestamps keep the order explicit; two
// branches that both create 0005 collide in review instead of silently
// interleaving. Create never overwrites a file.
func Create(dir, name string) (upPath, downPath string, err error) {
	slug := slugify(name)
	if slug == "" {
		return "", "", fmt.Errorf("migrate: create: name %q has no letters or digits", name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("migrate: create: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("migrate: create: %w", err)
	}
	var latest int64
	for _, e := range entries {
		if v, _, _, ok := parseName(e.Name()); ok {
			latest = max(latest, v)
		}
	}
	m := Migration{Version: latest + 1, Name: slug}
	upPath = filepath.Join(dir, m.ID()+".up.sql")
	downPath = filepath.Join(dir, m.ID()+".down.sql")
	upBody := fmt.Sprintf("-- %s (up). Runs in one transaction with its schema_migrations row.\n", m.ID())
	downBody := fmt.Sprintf("-- %s (down). Reverts %s.up.sql exactly.\n", m.ID(), m.ID())
	if err := writeNew(upPath, upBody); err != nil {
		return "", "", err
	}
	if err := writeNew(downPath, downBody); err != nil {
		_ = os.Remove(upPath) // do not leave half a pair behind; Load would reject it
		return "", "", err
	}
	return upPath, downPath, nil
}

func writeNew(path, body string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("migrate: create: %w", err)
	}
	_, werr := f.WriteString(body)
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("migrate: create: %w", err)
	}
	return nil
}

func slugify(name string) string {
	var b strings.Builder
	sep := false
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if sep && b.Len() > 0 {
				b.WriteByte('_')
			}
			sep = false
			b.WriteRune(r)
			continue
		}
		sep = true
	}
	return b.String()
}
