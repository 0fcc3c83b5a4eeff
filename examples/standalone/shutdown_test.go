package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

// mintKey logs in to the admin API and creates a key.
func mintKey(t *testing.T, base, password string) (id, key string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/admin/login", nil)
	req.SetBasicAuth("admin", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	status, body := do(t, "POST", base+"/admin/api-keys", map[string]any{"name": "streams"}, "Authorization", "Bearer "+login.AccessToken)
	var created struct{ ID, Key string }
	if err := json.Unmarshal(body, &created); err != nil || status != 201 {
		t.Fatalf("create key: %d %s", status, body)
	}
	return created.ID, created.Key
}

// streamSeen is what a client saw of one stream.
type streamSeen struct {
	status int
	events []string // event names, in order
	err    error    // of reading the body
	ended  time.Time
}

func (s streamSeen) complete() bool {
	return s.status == 200 && len(s.events) > 0 && s.events[len(s.events)-1] == "message_stop"
}

// openStreams starts n streams on the server and returns once each has
// received its first event; their outcomes arrive on the channel.
func openStreams(t *testing.T, base, key string, n int) <-chan streamSeen {
	t.Helper()
	out := make(chan streamSeen, n)
	var started sync.WaitGroup
	started.Add(n)
	for range n {
		go func() {
			var once sync.Once
			begun := func() { once.Do(started.Done) }
			defer begun()
			seen := streamSeen{}
			defer func() { seen.ended = time.Now(); out <- seen }()
			req, _ := http.NewRequest("POST", base+"/v1/messages", strings.NewReader(
				`{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("x-api-key", key)
			req.Header.Set("content-type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				seen.err = err
				return
			}
			defer resp.Body.Close()
			seen.status = resp.StatusCode
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
					seen.events = append(seen.events, name)
					begun()
				}
			}
			seen.err = sc.Err()
		}()
	}
	done := make(chan struct{})
	go func() { started.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the streams did not start")
	}
	return out
}

// storedRecords opens the server's SQLite store (after the server ended)
// and returns the key's records.
func storedRecords(t *testing.T, dir, keyID string) []usage.Record {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, _, err := st.ListRecords(context.Background(), usage.Filter{KeyID: keyID}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func shutdownEnv(fakeURL, dir string) map[string]string {
	return map[string]string{
		"UPSTREAM_API_KEY": "sk-ant-real", "UPSTREAM_BASE_URL": fakeURL, "RELAY_DATA_DIR": dir,
		"ADMIN_PASSWORD": "pw-for-tests", "BCRYPT_COST": "4", "SECRET_KEY": "0123456789abcdef0123456789abcdef",
	}
}

// TestShutdownDuringStreams: SIGTERM (the end of run's ctx, as
// signal.NotifyContext delivers it) while streams run: every stream
// completes, run returns nil, and every stream's usage is on disk.
func TestShutdownDuringStreams(t *testing.T) {
	testenv.CheckGoroutines(t)
	fake := upstreamtest.New(upstreamtest.Config{APIKey: "sk-ant-real", Deltas: 10, EventDelay: 100 * time.Millisecond})
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	s := start(t, shutdownEnv(fake.URL, dir))
	keyID, key := mintKey(t, "http://"+s.addr, "pw-for-tests")

	const streams = 5
	seen := openStreams(t, "http://"+s.addr, key, streams)
	sigterm := time.Now()
	s.stop(t) // cancels run's ctx and waits: run returned nil
	stopped := time.Since(sigterm)

	for range streams {
		st := <-seen
		if !st.complete() || st.err != nil {
			t.Errorf("a stream during shutdown: status %d, events %v, err %v", st.status, st.events, st.err)
		}
		if !st.ended.After(sigterm) {
			t.Error("a stream ended before the shutdown began")
		}
	}
	t.Logf("%d streams of ~1 s drained in %v", streams, stopped.Round(time.Millisecond))

	recs := storedRecords(t, dir, keyID)
	u := fake.ExpectedUsage()
	if len(recs) != streams {
		t.Fatalf("%d records on disk, want %d", len(recs), streams)
	}
	for _, rec := range recs {
		if rec.Status != 200 || rec.ErrorType != "" || rec.Estimated || rec.Usage.InputTokens != u.InputTokens || rec.Usage.OutputTokens != u.OutputTokens {
			t.Errorf("record = %+v", rec)
		}
	}
}

// TestShutdownGraceShorterThanStreams: with SHUTDOWN_GRACE shorter than
// the streams, run still returns (nil) soon after the grace; the streams
// are cut, and each is recorded as cut by the shutdown, none lost.
func TestShutdownGraceShorterThanStreams(t *testing.T) {
	testenv.CheckGoroutines(t)
	fake := upstreamtest.New(upstreamtest.Config{APIKey: "sk-ant-real", Deltas: 100, EventDelay: 100 * time.Millisecond})
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	env := shutdownEnv(fake.URL, dir)
	const grace = 300 * time.Millisecond
	env["SHUTDOWN_GRACE"] = grace.String()
	s := start(t, env)
	keyID, key := mintKey(t, "http://"+s.addr, "pw-for-tests")

	const streams = 5
	seen := openStreams(t, "http://"+s.addr, key, streams)
	sigterm := time.Now()
	s.stop(t)
	stopped := time.Since(sigterm)
	if stopped > grace+5*time.Second {
		t.Errorf("run returned %v after the signal, with a grace of %v", stopped, grace)
	}
	for range streams {
		if st := <-seen; st.complete() {
			t.Errorf("a 10 s stream completed within a %v grace: %v", grace, st.events)
		}
	}
	t.Logf("run returned %v after the signal; grace %v", stopped.Round(time.Millisecond), grace)

	recs := storedRecords(t, dir, keyID)
	if len(recs) != streams {
		t.Fatalf("%d records on disk, want %d", len(recs), streams)
	}
	for _, rec := range recs {
		cut := rec.ErrorType == "relay_shutdown" || rec.Status == usage.StatusClientClosed
		if !cut || rec.Usage.InputTokens != fake.ExpectedUsage().InputTokens || rec.Usage.OutputTokens < 1 {
			t.Errorf("record of a cut stream = %+v", rec)
		}
	}
}
