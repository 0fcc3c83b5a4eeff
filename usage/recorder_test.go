package usage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/usage"
)

// storeMode is how a flakyStore answers.
type storeMode int

const (
	storeUp   storeMode = iota
	storeFail           // returns an error at once
	storeSlow           // blocks until ctx ends (a slow store that honours ctx)
	storeHang           // blocks until set to another mode, ignoring ctx; then stores
)

func (m storeMode) String() string {
	return [...]string{"up", "fail", "slow", "hang"}[m]
}

// flakyStore wraps a store and fails, blocks or hangs on command.
type flakyStore struct {
	usage.Store
	mu      sync.Mutex
	mode    storeMode
	release chan struct{} // closed when a hang ends
	calls   atomic.Int64
}

func newFlaky(s usage.Store) *flakyStore {
	return &flakyStore{Store: s, release: make(chan struct{})}
}

func (f *flakyStore) set(m storeMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode == storeHang && m != storeHang {
		close(f.release)
	}
	if m == storeHang && f.mode != storeHang {
		f.release = make(chan struct{})
	}
	f.mode = m
}

func (f *flakyStore) InsertRecords(ctx context.Context, recs []usage.Record) error {
	f.calls.Add(1)
	f.mu.Lock()
	mode, release := f.mode, f.release
	f.mu.Unlock()
	switch mode {
	case storeFail:
		return errors.New("flaky: store down")
	case storeSlow:
		<-ctx.Done()
		return ctx.Err()
	case storeHang:
		<-release // then lands late, as a write that timed out may
	}
	return f.Store.InsertRecords(context.Background(), recs)
}

var baseTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newRec returns record i; its input tokens are i+1, so a sum of input
// tokens tells which records were stored, not only how many.
func newRec(i int) usage.Record {
	return usage.Record{
		RequestID: fmt.Sprintf("req_%07d", i),
		Time:      baseTime.Add(time.Duration(i) * time.Microsecond),
		KeyID:     fmt.Sprintf("key_%d", i%4),
		Method:    "POST",
		Path:      "/v1/messages",
		Model:     "claude-sonnet-4-5",
		Status:    200,
		Usage:     usage.Usage{InputTokens: int64(i + 1), OutputTokens: 7},
	}
}

// inputSum is the input tokens of records [from, to).
func inputSum(from, to int) int64 { return int64(to*(to+1)/2 - from*(from+1)/2) }

// fastConfig is a configuration with short intervals for tests.
func fastConfig(s usage.Store, spoolDir string) usage.RecorderConfig {
	return usage.RecorderConfig{
		Store: s, SpoolDir: spoolDir,
		BatchSize: 64, FlushInterval: 2 * time.Millisecond, QueueSize: 1024,
		WriteTimeout: 2 * time.Second, RetryInterval: 5 * time.Millisecond, MaxRetryInterval: 20 * time.Millisecond,
		SpoolSyncInterval: 5 * time.Millisecond,
	}
}

func newRecorder(t testing.TB, cfg usage.RecorderConfig) *usage.Recorder {
	t.Helper()
	r, err := usage.NewRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func closeRecorder(t testing.TB, r *usage.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// recordRange records [from, to) from n goroutines and fails the test on
// any error.
func recordRange(t testing.TB, r *usage.Recorder, from, to, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range n {
		wg.Go(func() {
			for i := from + g; i < to; i += n {
				if err := r.Record(newRec(i)); err != nil {
					errs <- fmt.Errorf("Record(%d): %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// waitFor polls cond, more and more slowly (up to every 10 ms), until it
// holds or 30 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for pause := 100 * time.Microsecond; !cond(); pause = min(2*pause, 10*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(pause)
	}
}

func totals(t testing.TB, s usage.Store) usage.Totals {
	t.Helper()
	tot, err := s.Totals(context.Background(), usage.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return tot
}

// wantStored checks that s holds exactly records [from, to).
func wantStored(t testing.TB, s usage.Store, from, to int) {
	t.Helper()
	tot := totals(t, s)
	if tot.Requests != int64(to-from) || tot.Usage.InputTokens != inputSum(from, to) {
		t.Fatalf("stored %d records (input tokens %d), want %d (%d)", tot.Requests, tot.Usage.InputTokens, to-from, inputSum(from, to))
	}
}

// waitStored waits until n records are stored, asking the store only once
// r says it holds none (Totals is not cheap on a big memory store).
func waitStored(t testing.TB, r *usage.Recorder, s usage.Store, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d records stored", n), func() bool {
		st := r.Stats()
		return st.Queued == 0 && st.Spooled == 0 && totals(t, s).Requests >= int64(n)
	})
}

func segments(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "usage-*.spool"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(segs)
	return segs
}

// stateLog records OnStoreState calls.
type stateLog struct {
	mu     sync.Mutex
	states []bool
}

func (l *stateLog) on(up bool) {
	l.mu.Lock()
	l.states = append(l.states, up)
	l.mu.Unlock()
}

func (l *stateLog) get() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states)
}

// TestRecorderOutageMidLoad: 8 goroutines record 20,000 records while the
// store goes down (three ways) and comes back: all 20,000 are stored, once.
func TestRecorderOutageMidLoad(t *testing.T) {
	for _, mode := range []storeMode{storeFail, storeSlow, storeHang} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			mem := memory.New()
			fs := newFlaky(mem)
			var states stateLog
			cfg := fastConfig(fs, t.TempDir())
			cfg.OnStoreState = states.on
			if mode != storeFail {
				cfg.WriteTimeout = 250 * time.Millisecond
			}
			r := newRecorder(t, cfg)

			const total, workers = 20000, 8
			recordRange(t, r, 0, 6000, workers)
			fs.set(mode)
			recordRange(t, r, 6000, 12000, workers)
			waitFor(t, "the outage to be seen", func() bool { st := r.Stats(); return st.StoreErrors > 0 && st.SpooledTotal > 0 })
			recordRange(t, r, 12000, 16000, workers)
			fs.set(storeUp)
			recordRange(t, r, 16000, total, workers)

			waitStored(t, r, mem, total)
			closeRecorder(t, r)
			wantStored(t, mem, 0, total)

			st := r.Stats()
			if st.Dropped != 0 || st.Queued != 0 || st.Spooled != 0 || st.SpooledTotal == 0 || st.Replayed != st.SpooledTotal {
				t.Errorf("stats %+v: want nothing dropped, queued or left spooled, and everything spooled replayed", st)
			}
			if st.Written+st.Replayed < total {
				t.Errorf("stats %+v: Written+Replayed < %d", st, total)
			}
			checkStates(t, states.get(), mode == storeFail)
			if segs := segments(t, cfg.SpoolDir); len(segs) != 0 {
				t.Errorf("segments left after replay: %v", segs)
			}
		})
	}
}

// checkStates checks that OnStoreState was called once per transition,
// down first, and ended up. A write that overruns WriteTimeout on a loaded
// machine is a real transition, so a short WriteTimeout may add some.
func checkStates(t *testing.T, got []bool, exact bool) {
	t.Helper()
	ok := len(got) >= 2 && len(got)%2 == 0
	for i, up := range got {
		ok = ok && up == (i%2 == 1)
	}
	if !ok || exact && len(got) != 2 {
		t.Errorf("OnStoreState calls %v, want [false true]", got)
	}
}

// TestRecorderStoreDownAtClose: Close with the store down spools
// everything; a new Recorder on the same spool replays it all, once.
func TestRecorderStoreDownAtClose(t *testing.T) {
	dir := t.TempDir()
	mem := memory.New()
	fs := newFlaky(mem)
	fs.set(storeFail)
	r1 := newRecorder(t, fastConfig(fs, dir))
	const n = 3000
	recordRange(t, r1, 0, n, 4)
	closeRecorder(t, r1)
	if st := r1.Stats(); st.Spooled != n || st.SpooledTotal != n || st.Written != 0 || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("after Close with the store down: %+v, want all %d spooled", st, n)
	}
	if err := r1.Record(newRec(n)); !errors.Is(err, usage.ErrClosed) {
		t.Fatalf("Record after Close: %v, want ErrClosed", err)
	}
	wantStored(t, mem, 0, 0)

	r2 := newRecorder(t, fastConfig(fs, dir)) // the store still down: nothing replayed yet
	if st := r2.Stats(); st.Spooled != n {
		t.Fatalf("new Recorder sees %d spooled, want %d", st.Spooled, n)
	}
	fs.set(storeUp)
	waitStored(t, r2, mem, n)
	closeRecorder(t, r2)
	wantStored(t, mem, 0, n)
	if st := r2.Stats(); st.Replayed != n || st.SpooledTotal != 0 || st.Written != 0 {
		t.Errorf("replaying Recorder: %+v, want Replayed %d", st, n)
	}
	if segs := segments(t, dir); len(segs) != 0 {
		t.Errorf("segments left after replay: %v", segs)
	}
}

// TestRecorderCloseUnderLoad is SIGTERM under load: goroutines record as
// fast as they can until Close; every record Record accepted is stored, or
// spooled and stored by the next Recorder.
func TestRecorderCloseUnderLoad(t *testing.T) {
	for _, mode := range []storeMode{storeUp, storeFail, storeHang} {
		t.Run("store "+mode.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mem := memory.New()
			fs := newFlaky(mem)
			fs.set(mode)
			cfg := fastConfig(fs, dir)
			cfg.WriteTimeout = time.Minute // a hung store is only left by Close's ctx
			r := newRecorder(t, cfg)

			var next, accepted atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						err := r.Record(newRec(int(i)))
						if errors.Is(err, usage.ErrClosed) {
							return
						}
						if err != nil {
							t.Errorf("Record: %v", err)
							return
						}
						accepted.Add(1)
					}
				})
			}
			waitFor(t, "load", func() bool { return accepted.Load() > 5000 })
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if err := r.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			wg.Wait()
			st := r.Stats()
			n := accepted.Load()
			if st.Dropped != 0 || st.Queued != 0 {
				t.Fatalf("after Close: %+v", st)
			}
			fs.set(storeUp) // lets a hung write land
			r2 := newRecorder(t, cfg)
			waitFor(t, "the spool to drain", func() bool { return r2.Stats().Spooled == 0 })
			closeRecorder(t, r2)
			if tot := totals(t, mem); tot.Requests != n {
				t.Fatalf("%d records accepted, %d stored (first Recorder: %+v)", n, tot.Requests, st)
			}
		})
	}
}

// TestRecorderTornTail: after a crash tore the spool's last write, replay
// keeps every complete record and ignores the torn one.
func TestRecorderTornTail(t *testing.T) {
	const n = 100
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		want   int // records replayed: the first want of n
	}{
		{"cut mid-entry", func(t *testing.T, path string, size int64) { truncate(t, path, size-5) }, n - 1},
		{"cut mid-header", func(t *testing.T, path string, size int64) {
			truncate(t, path, size-int64(entrySize(t, n-1))+3)
		}, n - 1},
		{"cut at entry boundary", func(t *testing.T, path string, size int64) {
			truncate(t, path, size-int64(entrySize(t, n-1)))
		}, n - 1},
		{"zeros appended", func(t *testing.T, path string, _ int64) { appendBytes(t, path, make([]byte, 4096)) }, n},
		{"garbage appended", func(t *testing.T, path string, _ int64) {
			appendBytes(t, path, []byte("\x10\x00\x00\x00garbage-not-a-record"))
		}, n},
		{"header only", func(t *testing.T, path string, _ int64) { truncate(t, path, 8) }, 0},
		{"empty file", func(t *testing.T, path string, _ int64) { truncate(t, path, 0) }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mem := memory.New()
			fs := newFlaky(mem)
			fs.set(storeFail)
			cfg := fastConfig(fs, dir)
			cfg.RetryInterval = time.Hour // no probe, which would seal the segment
			r1 := newRecorder(t, cfg)
			recordRange(t, r1, 0, n, 1)
			closeRecorder(t, r1)
			segs := segments(t, dir)
			if len(segs) != 1 {
				t.Fatalf("segments %v, want 1", segs)
			}
			fi, err := os.Stat(segs[0])
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, segs[0], fi.Size())

			r2 := newRecorder(t, fastConfig(fs, dir)) // the store still down: nothing replayed yet
			if got := r2.Stats().Spooled; got != int64(tt.want) {
				t.Errorf("Spooled at start = %d, want %d", got, tt.want)
			}
			fs.set(storeUp)
			waitFor(t, "the spool to drain", func() bool { return r2.Stats().Spooled == 0 })
			closeRecorder(t, r2)
			wantStored(t, mem, 0, tt.want)
			if segs := segments(t, dir); len(segs) != 0 {
				t.Errorf("segments left after replay: %v", segs)
			}
		})
	}
}

// entrySize is the size on disk of record i's spool entry: an 8-byte head
// and its JSON.
func entrySize(t *testing.T, i int) int {
	rec := newRec(i)
	b, err := json.Marshal(&rec)
	if err != nil {
		t.Fatal(err)
	}
	return 8 + len(b)
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestRecorderSpoolFull: with the store down and the spool full, records
// are dropped, and every drop is counted.
func TestRecorderSpoolFull(t *testing.T) {
	for _, spool := range []bool{true, false} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			t.Parallel()
			dir := ""
			if spool {
				dir = t.TempDir()
			}
			mem := memory.New()
			fs := newFlaky(mem)
			fs.set(storeFail)
			cfg := fastConfig(fs, dir)
			cfg.SpoolMaxBytes = 16 << 10 // about 60 records
			cfg.QueueSize, cfg.BatchSize = 8, 4
			cfg.MaxBlock = time.Millisecond
			r := newRecorder(t, cfg)

			const n = 500
			var dropped int64
			for i := range n {
				switch err := r.Record(newRec(i)); {
				case errors.Is(err, usage.ErrDropped):
					dropped++
				case err != nil:
					t.Fatal(err)
				}
			}
			st := r.Stats()
			if dropped == 0 || st.Dropped != dropped {
				t.Fatalf("Record returned ErrDropped %d times, Stats %+v", dropped, st)
			}
			if spool && (st.SpooledTotal == 0 || st.Spooled != st.SpooledTotal) {
				t.Fatalf("nothing spooled: %+v", st)
			}

			// The store stays down: Close's ctx ends with records that
			// neither the store nor the spool takes.
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			err := r.Close(ctx)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Close = %v, want an error wrapping DeadlineExceeded", err)
			}
			st = r.Stats()
			if st.SpooledTotal+st.Dropped != n || st.Queued != 0 {
				t.Fatalf("stats %+v: SpooledTotal + Dropped != %d", st, n)
			}
			if spool {
				var size int64
				for _, seg := range segments(t, dir) {
					fi, err := os.Stat(seg)
					if err != nil {
						t.Fatal(err)
					}
					size += fi.Size()
				}
				if size > cfg.SpoolMaxBytes {
					t.Errorf("spool holds %d bytes, more than SpoolMaxBytes %d", size, cfg.SpoolMaxBytes)
				}
				fs.set(storeUp)
				r2 := newRecorder(t, fastConfig(fs, dir))
				waitFor(t, "the spool to drain", func() bool { return r2.Stats().Spooled == 0 })
				closeRecorder(t, r2)
				if got := totals(t, mem).Requests; got != st.SpooledTotal {
					t.Errorf("replayed %d records, want the %d spooled", got, st.SpooledTotal)
				}
			}
		})
	}
}

// TestRecorderNoSpoolOutage: without a spool, a short outage loses
// nothing (the queue absorbs it), and the store's return is automatic.
func TestRecorderNoSpoolOutage(t *testing.T) {
	mem := memory.New()
	fs := newFlaky(mem)
	var states stateLog
	cfg := fastConfig(fs, "")
	cfg.QueueSize = 4096
	cfg.OnStoreState = states.on
	r := newRecorder(t, cfg)
	recordRange(t, r, 0, 1000, 4)
	fs.set(storeFail)
	recordRange(t, r, 1000, 2000, 4)
	waitFor(t, "the outage to be seen", func() bool { return r.Stats().StoreErrors > 0 })
	fs.set(storeUp)
	recordRange(t, r, 2000, 3000, 4)
	closeRecorder(t, r)
	wantStored(t, mem, 0, 3000)
	if st := r.Stats(); st.Written != 3000 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	checkStates(t, states.get(), true)
}

// TestRecorderQueueFullStoreSlow: with the writer stuck on a slow store and
// the queue full, Record goes to the spool and does not block.
func TestRecorderQueueFullStoreSlow(t *testing.T) {
	mem := memory.New()
	fs := newFlaky(mem)
	fs.set(storeHang)
	cfg := fastConfig(fs, t.TempDir())
	cfg.QueueSize, cfg.BatchSize = 16, 8
	cfg.WriteTimeout = time.Minute // the writer waits on the store all along
	r := newRecorder(t, cfg)

	const n = 2000
	var slowest time.Duration
	for i := range n {
		start := time.Now()
		if err := r.Record(newRec(i)); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	st := r.Stats()
	t.Logf("slowest Record: %v; %+v", slowest, st)
	if min := int64(n - cfg.QueueSize - cfg.BatchSize); st.SpooledTotal < min {
		t.Errorf("%d records spooled, want at least %d: %+v", st.SpooledTotal, min, st)
	}
	// The writer is stuck for a minute: a Record that waited on it would
	// take that long. The bound is generous for a loaded test machine.
	if slowest > time.Second {
		t.Errorf("slowest Record took %v", slowest)
	}
	fs.set(storeUp)
	waitStored(t, r, mem, n)
	closeRecorder(t, r)
	wantStored(t, mem, 0, n)
}

// TestRecorderCloseHungStore: Close's ctx ends while a write hangs: Close
// returns, and the records are spooled, not lost.
func TestRecorderCloseHungStore(t *testing.T) {
	dir := t.TempDir()
	mem := memory.New()
	fs := newFlaky(mem)
	fs.set(storeHang)
	cfg := fastConfig(fs, dir)
	cfg.WriteTimeout = time.Minute
	r := newRecorder(t, cfg)
	const n = 500
	recordRange(t, r, 0, n, 4)
	waitFor(t, "a write to hang", func() bool { return fs.calls.Load() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a 50ms ctx", d)
	}
	if st := r.Stats(); st.Spooled != n || st.Dropped != 0 {
		t.Fatalf("after Close: %+v, want all %d spooled", st, n)
	}
	fs.set(storeUp)
	r2 := newRecorder(t, cfg)
	waitFor(t, "the spool to drain", func() bool { return r2.Stats().Spooled == 0 })
	closeRecorder(t, r2)
	wantStored(t, mem, 0, n)
}

// TestRecorderSpoolOrder: spooled records are replayed in the order they
// were spooled, across segments.
func TestRecorderSpoolOrder(t *testing.T) {
	dir := t.TempDir()
	down := newFlaky(memory.New())
	down.set(storeFail)
	cfg := fastConfig(down, dir)
	cfg.SpoolSegmentBytes = 4 << 10 // many segments
	r1 := newRecorder(t, cfg)
	const n = 1000
	recordRange(t, r1, 0, n, 1)
	closeRecorder(t, r1)
	if segs := segments(t, dir); len(segs) < 10 {
		t.Fatalf("%d segments, want many", len(segs))
	}

	var seen orderStore
	cfg.Store = &seen
	r2 := newRecorder(t, cfg)
	waitFor(t, "the spool to drain", func() bool { return r2.Stats().Spooled == 0 })
	closeRecorder(t, r2)
	ids := seen.ids()
	if len(ids) != n {
		t.Fatalf("replayed %d records, want %d", len(ids), n)
	}
	for i, id := range ids {
		if want := newRec(i).RequestID; id != want {
			t.Fatalf("replayed record %d is %s, want %s", i, id, want)
		}
	}
}

// orderStore remembers the order of the request ids it is given.
type orderStore struct {
	usage.Store
	mu  sync.Mutex
	got []string
}

func (s *orderStore) InsertRecords(_ context.Context, recs []usage.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.got = append(s.got, r.RequestID)
	}
	return nil
}

func (s *orderStore) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func TestRecorderSpoolLocked(t *testing.T) {
	dir := t.TempDir()
	r := newRecorder(t, fastConfig(memory.New(), dir))
	if _, err := usage.NewRecorder(fastConfig(memory.New(), dir)); err == nil {
		t.Skip("no spool lock on this platform")
	}
	closeRecorder(t, r)
	r2 := newRecorder(t, fastConfig(memory.New(), dir)) // the lock went with Close
	closeRecorder(t, r2)
}

// TestRecorderSQLite: records, every field set, go through the spool to
// SQLite and come back as recorded.
func TestRecorderSQLite(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir := t.TempDir()
	fs := newFlaky(db)
	full := func(i int) usage.Record {
		r := newRec(i)
		r.Time = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600)).Add(time.Duration(i) * time.Second)
		r.Upstream, r.ResponseModel, r.Stream, r.ErrorType = "primary", "claude-sonnet-4-5-20250929", i%2 == 0, "overloaded_error"
		r.Status = 529
		r.Usage = usage.Usage{InputTokens: int64(i + 1), OutputTokens: 2, CacheCreationInputTokens: 3, CacheReadInputTokens: 4,
			CacheCreation5m: 1, CacheCreation1h: 2, WebSearchRequests: 5, WebFetchRequests: 6, ServiceTier: "standard"}
		r.Estimated, r.CostUSD, r.Latency, r.TTFT = true, 0.125, 1500*time.Millisecond, 300*time.Millisecond
		r.ClientIP, r.UserAgent, r.SessionID = "192.0.2.1", "claude-cli/2.0 \"quoted\" ünïcode\n", "sess-1"
		return r
	}
	r1 := newRecorder(t, fastConfig(fs, dir))
	for i := range 100 { // straight to the store
		if err := r1.Record(full(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitStored(t, r1, db, 100)
	fs.set(storeFail)
	for i := 100; i < 300; i++ { // through the spool
		if err := r1.Record(full(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeRecorder(t, r1)
	if st := r1.Stats(); st.Spooled == 0 {
		t.Fatalf("nothing spooled: %+v", st)
	}
	fs.set(storeUp)
	r2 := newRecorder(t, fastConfig(fs, dir))
	waitFor(t, "the spool to drain", func() bool { return r2.Stats().Spooled == 0 })
	closeRecorder(t, r2)

	got, _, err := db.ListRecords(ctx, usage.Filter{}, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 300 {
		t.Fatalf("stored %d records, want 300", len(got))
	}
	slices.Reverse(got) // oldest first
	for i, g := range got {
		want := full(i)
		want.Time = want.Time.Truncate(time.Microsecond).UTC()
		if g != want {
			t.Fatalf("record %d:\n got %+v\nwant %+v", i, g, want)
		}
	}
}

// poisonStore refuses any batch holding one request id, as a database
// refuses a value it cannot store, while taking every other batch.
type poisonStore struct {
	usage.Store
	poison string
}

func (s poisonStore) InsertRecords(ctx context.Context, recs []usage.Record) error {
	for _, r := range recs {
		if r.RequestID == s.poison {
			return fmt.Errorf("poison: cannot store %s", r.RequestID)
		}
	}
	return s.Store.InsertRecords(ctx, recs)
}

// TestRecorderPoisonRecord: a record the store refuses for what it is,
// while it takes the others, is dropped (counted) once it is singled out;
// it does not hold back the records after it.
func TestRecorderPoisonRecord(t *testing.T) {
	for _, spool := range []bool{true, false} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			t.Parallel()
			dir := ""
			if spool {
				dir = t.TempDir()
			}
			mem := memory.New()
			const n, poison = 2000, 777
			cfg := fastConfig(poisonStore{Store: mem, poison: newRec(poison).RequestID}, dir)
			cfg.QueueSize = n
			r := newRecorder(t, cfg)
			recordRange(t, r, 0, n, 4)
			// Keep records coming, as live traffic does, until the poison
			// record is singled out and everything else is stored.
			next := n
			waitFor(t, "the poison record to be dropped", func() bool {
				if err := r.Record(newRec(next)); err != nil {
					t.Fatal(err)
				}
				next++
				st := r.Stats()
				return st.Dropped == 1 && st.Spooled == 0 && st.Queued == 0
			})
			closeRecorder(t, r)
			tot := totals(t, mem)
			if tot.Requests != int64(next-1) || tot.Usage.InputTokens != inputSum(0, next)-(poison+1) {
				t.Fatalf("stored %d records, want all %d but the poison one", tot.Requests, next-1)
			}
		})
	}
}

// discardStore takes records and keeps nothing.
type discardStore struct{ usage.Store }

func (discardStore) InsertRecords(context.Context, []usage.Record) error { return nil }

// BenchmarkRecorderRecord measures Record's enqueue path, the only cost
// on the request path.
func BenchmarkRecorderRecord(b *testing.B) {
	// MaxBlock: should the writer fall behind, on a loaded machine, wait
	// rather than fail the benchmark.
	r, err := usage.NewRecorder(usage.RecorderConfig{Store: discardStore{}, MaxBlock: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(context.Background())
	rec := newRec(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Record(rec); err != nil {
			b.Fatal(err)
		}
	}
}
