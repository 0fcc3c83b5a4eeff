// Command standalone is the full relay server: the relay package with an
// embedded SQLite store, configured from the environment.
//
//	UPSTREAM_API_KEY=sk-ant-… go run ./examples/standalone
//
// Subcommands:
//
//	standalone                 serve (the default)
//	standalone migrate up      apply pending migrations
//	standalone migrate down [N]  roll back N migrations (default 1)
//	standalone migrate status  list migrations and whether each is applied
//	standalone migrate create NAME  write a new numbered up/down pair
//	standalone config check    validate the configuration without starting; secrets never printed
//	standalone healthcheck     exit 0 when the server on LISTEN_ADDR answers /health (for Docker)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

// run is main without the process: arguments, environment and output are
// passed in, so tests run the whole server in process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			args = args[1:]
		case "migrate":
			return runMigrate(ctx, args[1:], getenv, stdout)
		case "healthcheck":
			return healthcheck(ctx, getenv)
		case "config":
			if len(args) != 2 || args[1] != "check" {
				return fmt.Errorf("usage: standalone config check")
			}
			return configCheck(ctx, getenv, stdout)
		case "help", "-h", "--help":
			fmt.Fprint(stdout, usageText)
			return nil
		default:
			return fmt.Errorf("unknown command %q\n%s", args[0], usageText)
		}
	}
	if len(args) > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", args)
	}
	return serve(ctx, getenv, stdout, stderr)
}

const usageText = `usage: standalone [serve | migrate up | migrate down [N] | migrate status | migrate create NAME | config check | healthcheck]

Configuration is read from the environment; see examples/standalone/.env.example.
`
