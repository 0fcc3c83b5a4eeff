package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/upstream"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileAndEnv(t *testing.T) {
	p := writeFile(t, `
listen_addr: ":9000"
log_format: json
log_level: debug
shutdown_grace: 45s
upstreams:
  - name: a
    base_url: https://a.example
    credential: sk-a
    priority: 2
  - name: b
    base_url: http://b.internal:8080
    credential: tok-b
    auth: bearer
    h2c: true
tiers:
  default: free
  tiers:
    free: {rpm: 5, daily_tokens: 1000}
quota:
  timezone: Asia/Shanghai
  counted: input,output
pricing:
  models:
    my-model: {input: 1, output: 2}
`)
	c, err := loadConfig(envOf(map[string]string{"RELAY_CONFIG": p, "LISTEN_ADDR": ":7000", "QUOTA_OUTPUT_CAP": "8192"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != ":7000" || c.LogFormat != "json" || c.LogLevel.String() != "DEBUG" || c.ShutdownGrace != 45*time.Second || c.Quota.OutputCap != 8192 {
		t.Errorf("env over file: %+v", c)
	}
	ups := c.upstreams()
	if len(ups) != 2 || ups[1].Auth != upstream.AuthBearer || ups[0].Priority != 2 || !ups[1].H2C || ups[0].H2C {
		t.Errorf("upstreams %+v", ups)
	}
	if c.Tiers.Resolve("", quota.Override{}).RPM != 5 {
		t.Errorf("tiers %+v", c.Tiers)
	}
	if loc, _ := c.location(); loc.String() != "Asia/Shanghai" {
		t.Errorf("location %v", loc)
	}
	if p, ok := c.pricing().Lookup("my-model-2026"); !ok || p.Output != 2 {
		t.Errorf("pricing %+v %v", p, ok)
	}
	if p, ok := c.pricing().Lookup("claude-sonnet-4-5"); !ok || p.Input != 3 {
		t.Errorf("built-in pricing lost: %+v", p)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{"unknown yaml field", "listen_adr: x\n", map[string]string{"UPSTREAM_API_KEY": "k"}, "listen_adr"},
		{"bad yaml type", "shutdown_grace: soon\n", map[string]string{"UPSTREAM_API_KEY": "k"}, "shutdown_grace"},
		{"negative tier", "tiers: {default: free, tiers: {free: {rpm: -1}}}\n", map[string]string{"UPSTREAM_API_KEY": "k"}, "rpm"},
		{"upstream without credential", "upstreams: [{name: a, base_url: https://a}]\n", nil, "credential"},
		{"bad env duration", "", map[string]string{"UPSTREAM_API_KEY": "k", "SHUTDOWN_GRACE": "forever"}, "SHUTDOWN_GRACE"},
		{"bad env bool", "", map[string]string{"UPSTREAM_API_KEY": "k", "RELAY_AUTO_MIGRATE": "perhaps"}, "RELAY_AUTO_MIGRATE"},
		{"bad time zone", "", map[string]string{"UPSTREAM_API_KEY": "k", "RELAY_TIMEZONE": "Mars/Olympus"}, "RELAY_TIMEZONE"},
		{"bad counted", "", map[string]string{"UPSTREAM_API_KEY": "k", "QUOTA_COUNTED": "input,teeth"}, "QUOTA_COUNTED"},
		{"bad hash", "", map[string]string{"UPSTREAM_API_KEY": "k", "ADMIN_PASSWORD_HASH": "plain"}, "ADMIN_PASSWORD_HASH"},
		{"bcrypt cost", "", map[string]string{"UPSTREAM_API_KEY": "k", "BCRYPT_COST": "40"}, "BCRYPT_COST"},
		{"redis prefix", "", map[string]string{"UPSTREAM_API_KEY": "k", "REDIS_PREFIX": "a{b}"}, "REDIS_PREFIX"},
		{"database scheme", "", map[string]string{"UPSTREAM_API_KEY": "k", "DATABASE_URL": "mysql://u:hunter2@h/db"}, "DATABASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.file != "" {
				env["RELAY_CONFIG"] = writeFile(t, tt.file)
			}
			env["RELAY_DATA_DIR"] = t.TempDir()
			err := run(context.Background(), []string{"config", "check"}, envOf(env), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to name %s", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Error("a password reached the error")
			}
		})
	}
}

// TestConfigCheckHidesSecrets: config check prints what it understood and
// never a secret.
func TestConfigCheckHidesSecrets(t *testing.T) {
	secrets := map[string]string{
		"UPSTREAM_API_KEY": "sk-ant-api03-supersecret",
		"ADMIN_PASSWORD":   "admin-pw-supersecret",
		"SECRET_KEY":       "0123456789abcdef0123456789abcdef-supersecret",
		"DATABASE_URL":     "postgres://relay:db-pw-supersecret@db:5432/relay",
		"REDIS_URL":        "redis://:redis-pw-supersecret@cache:6379/0",
	}
	p := writeFile(t, "upstreams: [{name: second, base_url: https://b.example, credential: tok-supersecret}]\n")
	env := map[string]string{"RELAY_CONFIG": p}
	for k, v := range secrets {
		env[k] = v
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"config", "check"}, envOf(env), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "supersecret") {
		t.Errorf("config check printed a secret:\n%s", out.String())
	}
	for _, want := range []string{"postgres", "redis", "second", "ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestExampleFilesAreValid(t *testing.T) {
	env := map[string]string{"RELAY_CONFIG": "config.example.yaml", "UPSTREAM_API_KEY": "k", "RELAY_DATA_DIR": t.TempDir()}
	if err := run(context.Background(), []string{"config", "check"}, envOf(env), io.Discard, io.Discard); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	b, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range envVars {
		if !strings.Contains(string(b), "\n"+name+"=") {
			t.Errorf(".env.example does not document %s", name)
		}
	}
}
