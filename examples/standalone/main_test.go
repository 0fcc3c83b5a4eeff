package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type server struct {
	addr           string
	stdout, stderr *lockedBuffer
	cancel         context.CancelFunc
	done           chan error
}

func start(t *testing.T, env map[string]string) *server {
	t.Helper()
	s := &server{addr: freeAddr(t), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	env["LISTEN_ADDR"] = s.addr
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- run(ctx, nil, func(k string) string { return env[k] }, s.stdout, s.stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + s.addr + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-s.done:
			t.Fatalf("server exited: %v\n%s", err, s.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %s", s.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("server did not stop")
	}
}

func do(t *testing.T, method, url string, body any, hdr ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestNewUser walks the README: first run, log in with the printed admin
// password, mint a key, send Claude Code-like traffic with the official
// SDK, read the usage back, shut down, and find everything on disk.
func TestNewUser(t *testing.T) {
	fake := upstreamtest.New(upstreamtest.Config{APIKey: "sk-ant-real"})
	defer fake.Close()
	dir := t.TempDir()
	env := map[string]string{"UPSTREAM_API_KEY": "sk-ant-real", "UPSTREAM_BASE_URL": fake.URL, "RELAY_DATA_DIR": dir}
	s := start(t, env)
	base := "http://" + s.addr

	out := s.stdout.String()
	i := strings.Index(out, "admin:")
	if i < 0 {
		t.Fatalf("no generated admin password printed: %q", out)
	}
	password := strings.TrimSpace(strings.SplitN(out[i+len("admin:"):], "\n", 2)[0])

	req, _ := http.NewRequest("POST", base+"/admin/login", nil)
	req.SetBasicAuth("admin", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if resp.StatusCode != 200 || login.AccessToken == "" || login.TokenType != "bearer" || login.ExpiresIn <= 0 {
		t.Fatalf("login: %d %+v", resp.StatusCode, login)
	}

	status, body := do(t, "POST", base+"/admin/api-keys", map[string]any{"name": "User", "token_limit": 1000000}, "Authorization", "Bearer "+login.AccessToken)
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &created); err != nil || status != 201 || !strings.HasPrefix(created.Key, "sk-proxy-") {
		t.Fatalf("create key: %d %s", status, body)
	}

	client := anthropic.NewClient(option.WithBaseURL(base), option.WithAPIKey(created.Key), option.WithMaxRetries(0))
	stream := client.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 64000,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	var m anthropic.Message
	for stream.Next() {
		_ = m.Accumulate(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model: "claude-haiku-4-5", MaxTokens: 100,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	}); err != nil {
		t.Fatal(err)
	}

	u := fake.ExpectedUsage()
	want := fmt.Sprintf(`"requests":2,"errors":0,"input_tokens":%d,"output_tokens":%d,"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d`,
		2*u.InputTokens, 2*u.OutputTokens, 2*u.CacheCreationInputTokens, 2*u.CacheReadInputTokens)
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, body = do(t, "GET", base+"/v1/usage", nil, "x-api-key", created.Key)
		if status == 200 && strings.Contains(string(body), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage: %d %s\nwant %s", status, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := run(context.Background(), []string{"healthcheck"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Errorf("healthcheck: %v", err)
	}
	if status, body := do(t, "GET", base+"/metrics", nil); status != 200 || !strings.Contains(string(body), "relay_tokens_total") {
		t.Errorf("metrics: %d", status)
	}
	s.stop(t)

	logs := s.stderr.String()
	for _, secret := range []string{created.Key, "sk-ant-real", password, login.AccessToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret reached the log")
		}
	}

	// The usage is on disk; a restart keeps the secret and the admin password.
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	tot, err := st.Totals(context.Background(), usage.Filter{KeyID: created.ID})
	st.Close()
	if err != nil || tot.Requests != 2 {
		t.Fatalf("stored totals %+v, %v", tot, err)
	}
	s = start(t, env)
	if strings.Contains(s.stdout.String(), "admin:") {
		t.Error("the admin password was printed again on the second run")
	}
	req, _ = http.NewRequest("GET", "http://"+s.addr+"/admin/api-keys/"+created.ID, nil)
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the admin token did not survive a restart: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	s.stop(t)
}

func TestRefusesToStart(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no upstream key", map[string]string{}, "UPSTREAM_API_KEY"},
		{"short secret", map[string]string{"UPSTREAM_API_KEY": "k", "SECRET_KEY": "short"}, "SECRET_KEY"},
		{"bad log format", map[string]string{"UPSTREAM_API_KEY": "k", "LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"bad upstream auth", map[string]string{"UPSTREAM_API_KEY": "k", "UPSTREAM_AUTH": "basic"}, "UPSTREAM_AUTH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["RELAY_DATA_DIR"] = t.TempDir()
			err := run(context.Background(), nil, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to name %s", err, tt.want)
			}
		})
	}
	if err := run(context.Background(), []string{"bogus"}, os.Getenv, io.Discard, io.Discard); err == nil {
		t.Error("an unknown command was accepted")
	}
}

func TestMigrateCommands(t *testing.T) {
	dir := t.TempDir()
	env := func(k string) string { return map[string]string{"RELAY_DATA_DIR": dir}[k] }
	var out bytes.Buffer
	for _, args := range [][]string{{"migrate", "up"}, {"migrate", "status"}, {"migrate", "down", "1"}, {"migrate", "status"}, {"migrate", "up"}} {
		out.Reset()
		if err := run(context.Background(), args, env, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		t.Logf("%v: %s", args, out.String())
	}
	if !strings.Contains(out.String(), "applied") {
		t.Errorf("migrate up printed %q", out.String())
	}
	if err := run(context.Background(), []string{"migrate", "down", "x"}, env, io.Discard, io.Discard); err == nil {
		t.Error("migrate down x was accepted")
	}
}

// TestPostgresAndRedis runs the server as production does: Postgres for
// keys and usage, Redis for limits, key changes and logouts.
func TestPostgresAndRedis(t *testing.T) {
	dsn := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	fake := upstreamtest.New(upstreamtest.Config{APIKey: "sk-ant-real"})
	defer fake.Close()
	base := map[string]string{
		"UPSTREAM_API_KEY": "sk-ant-real", "UPSTREAM_BASE_URL": fake.URL, "RELAY_DATA_DIR": t.TempDir(),
		"DATABASE_URL": dsn, "REDIS_URL": redisURL, "REDIS_PREFIX": prefix, "ADMIN_PASSWORD": "pw-for-tests",
		"SECRET_KEY": "0123456789abcdef0123456789abcdef",
	}

	// With auto-migration off, a fresh database is refused with the command to run.
	off := map[string]string{"RELAY_AUTO_MIGRATE": "false"}
	for k, v := range base {
		off[k] = v
	}
	err := run(context.Background(), nil, envOf(off), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "migrate up") {
		t.Fatalf("pending migrations: %v", err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate", "up"}, envOf(base), &out, io.Discard); err != nil || !strings.Contains(out.String(), "applied") {
		t.Fatalf("migrate up: %v %s", err, out.String())
	}

	s := start(t, off)
	url := "http://" + s.addr
	req, _ := http.NewRequest("POST", url+"/admin/login", nil)
	req.SetBasicAuth("admin", "pw-for-tests")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	status, body := do(t, "POST", url+"/admin/api-keys", map[string]any{"name": "pg", "token_limit": 1000000}, "Authorization", "Bearer "+login.AccessToken)
	var created struct {
		ID, Key string
	}
	if err := json.Unmarshal(body, &created); err != nil || status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	status, body = do(t, "POST", url+"/v1/messages", map[string]any{"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": []any{}}, "x-api-key", created.Key)
	if status != 200 {
		t.Fatalf("message: %d %s", status, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, body = do(t, "GET", url+"/v1/usage", nil, "x-api-key", created.Key)
		if strings.Contains(string(body), `"requests":1`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status != 200 || !strings.Contains(string(body), `"requests":1`) {
		t.Fatalf("usage: %d %s", status, body)
	}
	s.stop(t)
	if strings.Contains(s.stderr.String(), "pw-for-tests") || strings.Contains(s.stderr.String(), created.Key) {
		t.Error("a secret reached the log")
	}
}

// TestSlowAndOversizedHeaders: a client that sends its headers slowly is
// cut after READ_HEADER_TIMEOUT; headers over 1 MiB are refused (431)
// before any handler runs; the server keeps serving.
func TestSlowAndOversizedHeaders(t *testing.T) {
	fake := upstreamtest.New(upstreamtest.Config{})
	defer fake.Close()
	s := start(t, map[string]string{"UPSTREAM_API_KEY": "k", "UPSTREAM_BASE_URL": fake.URL, "RELAY_DATA_DIR": t.TempDir(), "READ_HEADER_TIMEOUT": "200ms"})
	defer s.stop(t)

	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key: sk-proxy-")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			break // closed by the server
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a slow client held its connection for %v", d)
	}

	req, _ := http.NewRequest("GET", "http://"+s.addr+"/v1/models", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2<<20))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("2 MiB of headers: %d", resp.StatusCode)
		}
	}
	if status, _ := do(t, "GET", "http://"+s.addr+"/health", nil); status != 200 {
		t.Errorf("the server stopped serving: %d", status)
	}
	if fake.Count() != 0 {
		t.Errorf("the upstream saw %d requests", fake.Count())
	}
}
