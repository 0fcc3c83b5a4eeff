package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/relaystation/relay/internal/migrate"
)

// runMigrate is `standalone migrate …`, the counterpart of the original
// design's `alembic upgrade head`, `alembic downgrade -1` and
// `alembic revision`, for the store DATABASE_URL names (SQLite by default).
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: migrate up | down [N] | status | create NAME")
	}
	c, err := migrateConfig(getenv)
	if err != nil {
		return err
	}
	if args[0] == "create" {
		if len(args) != 2 {
			return errors.New("usage: migrate create NAME")
		}
		dir, err := c.migrationsDir()
		if err != nil {
			return err
		}
		up, down, err := migrate.Create(dir, args[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created %s\ncreated %s\n", up, down)
		return nil
	}
	st, err := openStore(ctx, &c, false)
	if err != nil {
		return err
	}
	defer st.Close()
	m := st.Migrator()
	switch args[0] {
	case "up":
		done, err := m.Up(ctx)
		for _, mg := range done {
			fmt.Fprintf(stdout, "applied %s\n", mg.ID())
		}
		if err == nil && len(done) == 0 {
			fmt.Fprintln(stdout, "nothing to apply: the schema is current")
		}
		return err
	case "down":
		n := 1
		if len(args) > 1 {
			if n, err = strconv.Atoi(args[1]); err != nil || n < 1 {
				return fmt.Errorf("migrate down: N must be a positive number, got %q", args[1])
			}
		}
		done, err := m.Down(ctx, n)
		for _, mg := range done {
			fmt.Fprintf(stdout, "rolled back %s\n", mg.ID())
		}
		return err
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			state := "pending"
			if s.Missing {
				state = "applied, but unknown to this binary"
			} else if s.Applied {
				state = "applied " + s.AppliedAt.Format("2006-01-02 15:04:05Z07:00")
			}
			fmt.Fprintf(stdout, "%04d_%s  %s\n", s.Version, s.Name, state)
		}
		return nil
	}
	return fmt.Errorf("migrate: unknown subcommand %q (want up, down, status or create)", args[0])
}

// migrateConfig reads only what migrations need (the store's location):
// no upstream key is required to migrate.
func migrateConfig(getenv func(string) string) (config, error) {
	c, err := readConfigFile(getenv)
	if v := getenv("DATABASE_URL"); v != "" {
		c.DatabaseURL = v
	}
	if v := getenv("RELAY_DATA_DIR"); v != "" {
		c.DataDir = v
	}
	return c, err
}

func ensureDir(dir string) error {
	if dir == "" || dir == "." {
		return nil
	}
	return os.MkdirAll(dir, 0o700)
}
