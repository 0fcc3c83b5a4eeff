package main

import (
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// There is no Docker engine where these tests run, so the Docker assets are
// checked for what can be checked without one: the compose files parse and
// wire the services together, and every command the image runs exists.

type composeFile struct {
	Services map[string]struct {
		Build       any               `yaml:"build"`
		Image       string            `yaml:"image"`
		Environment map[string]string `yaml:"environment"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func readCompose(t *testing.T, name string) composeFile {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s does not parse: %v", name, err)
	}
	return c
}

func TestComposeFiles(t *testing.T) {
	c := readCompose(t, "docker-compose.yml")
	for _, name := range []string{"relay", "postgres", "redis"} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no %s service", name)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		if len(s.Volumes) == 0 {
			t.Errorf("%s keeps no volume", name)
		}
	}
	relay := c.Services["relay"]
	for _, dep := range []string{"postgres", "redis"} {
		if relay.DependsOn[dep].Condition != "service_healthy" {
			t.Errorf("relay does not wait for %s to be healthy", dep)
		}
	}
	if !strings.Contains(relay.Environment["DATABASE_URL"], "@postgres:5432/") || !strings.Contains(relay.Environment["REDIS_URL"], "redis:6379") {
		t.Errorf("relay environment %v", relay.Environment)
	}

	ext := readCompose(t, "docker-compose.external.yml")
	r := ext.Services["relay"]
	if !strings.Contains(r.Environment["DATABASE_URL"], "host.docker.internal:15432") || !strings.Contains(r.Environment["REDIS_URL"], ":123456@host.docker.internal:16379") {
		t.Errorf("external variant environment %v", r.Environment)
	}
}

// TestImageCommands runs every subcommand the Dockerfile, the compose files
// and deploy.sh use, so a renamed flag fails here rather than in a container.
func TestImageCommands(t *testing.T) {
	docker, _ := os.ReadFile("Dockerfile")
	deploy, _ := os.ReadFile("deploy.sh")
	for _, want := range []string{`CMD ["/relay", "healthcheck"]`, `CMD ["serve"]`, "CGO_ENABLED=0", "USER nonroot"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	if !regexp.MustCompile(`run --rm --no-deps relay migrate up`).Match(deploy) || !strings.Contains(string(deploy), "openssl rand -hex 32") {
		t.Error("deploy.sh does not migrate or does not generate SECRET_KEY")
	}
	dir := t.TempDir()
	env := func(k string) string { return map[string]string{"RELAY_DATA_DIR": dir, "LISTEN_ADDR": freeAddr(t)}[k] }
	if err := run(context.Background(), []string{"migrate", "up"}, env, io.Discard, io.Discard); err != nil {
		t.Errorf("migrate up: %v", err)
	}
	if err := run(context.Background(), []string{"help"}, env, io.Discard, io.Discard); err != nil {
		t.Errorf("help: %v", err)
	}
	// Nothing listens: healthcheck must fail, not hang or pass.
	if err := run(context.Background(), []string{"healthcheck"}, env, io.Discard, io.Discard); err == nil {
		t.Error("healthcheck passed with no server")
	}
}
