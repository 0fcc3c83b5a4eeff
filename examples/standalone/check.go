package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/relaystation/relay/quota"
	redisstore "github.com/relaystation/relay/storage/redis"
	"github.com/relaystation/relay/upstream"
)

// configCheck is `standalone config check`: it validates the whole
// configuration as serve would, without starting anything or touching the
// stores, and prints what it understood. Secrets are shown as set or
// unset, never echoed.
func configCheck(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	// The pool validates upstreams (names, URLs, model globs) without
	// connecting anywhere.
	pool, err := upstream.NewPool(upstream.PoolConfig{Upstreams: c.upstreams(), Retry: c.Retry, Cooldown: c.Cooldown})
	if err != nil {
		return err
	}
	pool.Close()
	kind, loc, err := c.backend()
	if err != nil {
		return err
	}
	if kind == "postgres" {
		loc = redisstore.RedactURL(loc) // same userinfo rule: password hidden
	}
	w := &strings.Builder{}
	if c.file != "" {
		fmt.Fprintf(w, "config file:   %s\n", c.file)
	}
	fmt.Fprintf(w, "listen:        %s\n", c.ListenAddr)
	fmt.Fprintf(w, "store:         %s %s (auto-migrate %v)\n", kind, loc, c.AutoMigrate)
	if c.RedisURL != "" {
		fmt.Fprintf(w, "redis:         %s (prefix %q, fail closed %v)\n", redisstore.RedactURL(c.RedisURL), c.RedisPrefix, c.Quota.FailClosed)
	} else {
		fmt.Fprintf(w, "redis:         none: limits in process (one instance)\n")
	}
	for _, u := range c.upstreams() {
		fmt.Fprintf(w, "upstream:      %s\n", u.String())
	}
	fmt.Fprintf(w, "admin:         %s, password %s, secret key %s\n", c.AdminUsername, setOrNot(c.AdminPassword != "" || c.AdminPasswordHash != "", "generated on first run"), setOrNot(c.SecretKey != "", "kept in the data dir"))
	loc2, _ := c.location()
	fmt.Fprintf(w, "quota:         windows in %s, output cap %d, counted %s\n", loc2, quota.Config{OutputCap: c.Quota.OutputCap}.OutputReservation(0), c.Quota.Counted)
	names := make([]string, 0, len(c.Tiers.Tiers))
	for n := range c.Tiers.Tiers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "tier:          %s %+v\n", n, c.Tiers.Tiers[n])
	}
	if len(c.Pricing.Models) > 0 {
		fmt.Fprintf(w, "pricing:       %d model prices over the built-in table\n", len(c.Pricing.Models))
	}
	fmt.Fprintf(w, "ok\n")
	_, err = io.WriteString(stdout, w.String())
	return err
}

func setOrNot(set bool, otherwise string) string {
	if set {
		return "set"
	}
	return "unset (" + otherwise + ")"
}
