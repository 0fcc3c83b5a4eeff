package migrate

import (
	"cmp"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Load reads the migrations in dir of fsys (an embed.FS in production).
// Every version needs both an .up.sql and a .down.sql file; a .down.sql may
// be empty when a change has nothing to undo. Any other *.sql file is an
// error rather than silently skipped, because a misnamed migration that
// never runs is worse than a failed start; non-SQL files (a README) are
// ignored.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	byVersion := make(map[int64]*Migration)
	seen := make(map[int64][2]bool) // up, down
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		v, name, up, ok := parseName(e.Name())
		if !ok {
			return nil, fmt.Errorf("migrate: %s: name must look like 0001_name.up.sql or 0001_name.down.sql", e.Name())
		}
		body, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		m := byVersion[v]
		if m == nil {
			m = &Migration{Version: v, Name: name}
			byVersion[v] = m
		} else if m.Name != name {
			return nil, fmt.Errorf("migrate: version %d has two names: %q and %q", v, m.Name, name)
		}
		s := seen[v]
		if up {
			m.Up, s[0] = string(body), true
		} else {
			m.Down, s[1] = string(body), true
		}
		seen[v] = s
	}
	out := make([]Migration, 0, len(byVersion))
	for v, m := range byVersion {
		switch s := seen[v]; {
		case !s[0]:
			return nil, fmt.Errorf("migrate: %s: missing .up.sql", m.ID())
		case !s[1]:
			return nil, fmt.Errorf("migrate: %s: missing .down.sql", m.ID())
		}
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	return out, nil
}

// parseName splits "0001_init.up.sql" into 1, "init", true. The name part
// is letters, digits and underscores, as Create writes it.
func parseName(file string) (version int64, name string, up, ok bool) {
	var stem string
	switch {
	case strings.HasSuffix(file, ".up.sql"):
		stem, up = strings.TrimSuffix(file, ".up.sql"), true
	case strings.HasSuffix(file, ".down.sql"):
		stem = strings.TrimSuffix(file, ".down.sql")
	default:
		return 0, "", false, false
	}
	digits, name, found := strings.Cut(stem, "_")
	if !found || digits == "" || name == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, "", false, false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return 0, "", false, false
		}
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || v <= 0 {
		return 0, "", false, false
	}
	return v, name, up, true
}
