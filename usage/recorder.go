package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// RecorderConfig configures a Recorder. Zero values are the defaults noted.
type RecorderConfig struct {
	// Store receives the records. Required. It must honour ctx: a call
	// that never returns stops the Recorder from probing the store again
	// (records still go to the spool meanwhile).
	Store Store
	// BatchSize is the most records written in one call. Zero means 1,024.
	// A batch this full only forms under load (FlushInterval ends a batch
	// first below about 4,000 requests a second), and that is when a
	// store's cost per record matters: it falls with the batch, as the
	// commit and the index pages touched are shared (storage/sqlite: 21 µs
	// per record in batches of 256, 14 µs in batches of 1,024).
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill.
	// Zero means 250 ms.
	FlushInterval time.Duration
	// QueueSize bounds the records waiting in memory. Zero means 8,192
	// (about 3 MB, allocated up front); beyond it records go to the spool.
	QueueSize int
	// WriteTimeout bounds one store write. A write that fails or takes
	// longer marks the store down: its batch, and every batch until a
	// probe succeeds, goes to the spool. Zero means 5 s.
	WriteTimeout time.Duration
	// RetryInterval is the wait after the store went down before the first
	// probe (the next batch is tried on the store); it doubles after each
	// failed probe up to MaxRetryInterval. Zero means 500 ms.
	RetryInterval time.Duration
	// MaxRetryInterval caps the wait between probes. Zero means 30 s.
	MaxRetryInterval time.Duration
	// MaxBlock is how long Record may wait for room in a full queue when
	// the spool cannot take the record (no SpoolDir, or spool full or
	// failing); after that the record is dropped (counted in
	// RecorderStats.Dropped, logged, and Record returns ErrDropped). Zero
	// means 100 ms; negative means drop at once.
	MaxBlock time.Duration

	// SpoolDir is the directory of the on-disk spool, created if needed.
	// Empty means no spool: while the store is down, records wait in the
	// queue (and are dropped once it is full, see MaxBlock). Records a
	// previous run left there are replayed first. One Recorder per
	// directory: a second one fails to start (where flock exists).
	SpoolDir string
	// SpoolMaxBytes bounds the spool's files together. Zero means 1 GiB.
	SpoolMaxBytes int64
	// SpoolSegmentBytes is the size at which the spool starts a new
	// segment file; replayed records free disk space a segment at a time.
	// Zero means SpoolMaxBytes/16, between 64 KiB and 64 MiB.
	SpoolSegmentBytes int64
	// SpoolSyncInterval is the group commit interval: spooled records are
	// fsynced together at most this long after they were written (sooner
	// when 1 MiB waits), so a crash loses at most this interval of
	// spooled records. Zero means 100 ms.
	SpoolSyncInterval time.Duration

	// OnStoreState, if set, is called with false when a store write fails
	// or times out while the store was up, and with true when a write
	// succeeds again. It is called from the Recorder's writer goroutine,
	// once per transition, and must return quickly (and not call Close).
	// The store is assumed up at start.
	OnStoreState func(up bool)
	// Logger; nil discards.
	Logger *slog.Logger
}

// RecorderStats are a Recorder's counters, for metrics. Each is read
// atomically, but not all at one instant.
type RecorderStats struct {
	// Queued is the records in memory, neither stored nor spooled.
	Queued int64
	// Spooled is the records on disk waiting for replay, including those a
	// previous run left.
	Spooled int64
	// SpooledTotal is the records written to the spool by this Recorder.
	SpooledTotal int64
	// Replayed is the records stored from the spool.
	Replayed int64
	// Written is the records stored straight from memory. Written plus
	// Replayed is every record stored (replay may store again a record the
	// store already had, after a crash or a write that timed out but
	// landed: the store skips it).
	Written int64
	// Dropped is the records lost: refused by Record with ErrDropped,
	// refused by the store for what they are (see Recorder), or left when
	// Close's ctx ended with neither store nor spool to take them.
	// Each is logged.
	Dropped int64
	// StoreErrors is the store writes that failed or timed out.
	StoreErrors int64
}

// Recorder writes records asynchronously in batches, so a client never
// waits on the usage store.
//
// Record puts a record in a bounded in-memory queue; one writer goroutine
// batches the queue (BatchSize records or FlushInterval, whichever comes
// first) and writes each batch to the store. Where a record goes:
//
//   - Queue has room: the queue, then the store. Record never waits.
//   - Queue full, spool enabled: appended to the spool by Record itself
//     (a write to the page cache, no fsync). Record does not wait on the
//     store, only on that write.
//   - Store failing or slow (an error, or a write longer than
//     WriteTimeout): the failed batch and every later one go to the spool,
//     until a probe (the next batch, after RetryInterval, doubling up to
//     MaxRetryInterval) succeeds. Then the spool is replayed in the
//     background, oldest record first, in batches between the live ones.
//   - No spool, or spool full: the writer keeps the failed batch in memory
//     and retries it at each probe, taking no more from the queue; once
//     the queue is full Record waits up to MaxBlock for room, then drops
//     the record: counted, logged (at most every 10 s) and reported as
//     ErrDropped.
//   - A record the store refuses for what it is rather than for an outage
//     (it keeps failing its batch while other batches go through): after
//     its batch failed twice, the batch is retried one record at a time,
//     and a record refused between two accepted writes is dropped, counted
//     and logged with its request id, so that it does not block every
//     record behind it. (A store going down exactly between two of those
//     single writes could drop one good record that way; it is logged.)
//
// Those two are the only ways a record is lost while running.
//
// Replay deletes a segment file only after all its records are stored;
// the store is idempotent on RequestID, so records stored twice (after a
// crash mid-segment, or a timed-out write that landed after all) count
// once.
//
// Guarantees: nothing is lost on a store outage (as long as the spool has
// room) or at Close. A crash loses the records in memory (at most the
// queue, normally about FlushInterval's worth) and spooled records not yet
// synced (at most SpoolSyncInterval's worth).
type Recorder struct {
	cfg   RecorderConfig
	log   *slog.Logger
	spool *spool // nil without SpoolDir

	mu     sync.RWMutex // Record holds it shared; Close exclusively to close queue
	closed bool
	queue  chan Record

	abandon     chan struct{} // closed when Close's ctx ends
	abandonOnce sync.Once
	closeOnce   sync.Once
	done        chan struct{} // closed when the writer has finished
	closeErr    error         // set by the writer before done

	inHand      atomic.Int64 // records the writer holds in memory
	written     atomic.Int64
	replayed    atomic.Int64
	dropped     atomic.Int64
	lost        atomic.Int64 // dropped by the writer at Close
	storeErrors atomic.Int64
	dropLog     rateLimit
	spoolLog    rateLimit
}

var (
	// ErrClosed is returned by Record after Close.
	ErrClosed = errors.New("usage: recorder closed")
	// ErrDropped is returned by Record when the record was lost: the queue
	// stayed full for MaxBlock and the spool is disabled or full.
	ErrDropped = errors.New("usage: record dropped: queue full and spool disabled or full")

	errWriteTimeout = errors.New("usage: store write timed out")
	errAbandoned    = errors.New("usage: store write abandoned at close")
)

// NewRecorder starts a Recorder; Close drains it. With a SpoolDir, it opens
// the spool and counts the records a previous run left there (reading the
// spool once), which the Recorder then replays in the background.
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	if cfg.Store == nil {
		return nil, errors.New("usage: RecorderConfig.Store is required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1024
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 250 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 8192
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 500 * time.Millisecond
	}
	if cfg.MaxRetryInterval <= 0 {
		cfg.MaxRetryInterval = 30 * time.Second
	}
	cfg.MaxRetryInterval = max(cfg.MaxRetryInterval, cfg.RetryInterval)
	if cfg.MaxBlock == 0 {
		cfg.MaxBlock = 100 * time.Millisecond
	}
	if cfg.SpoolMaxBytes <= 0 {
		cfg.SpoolMaxBytes = 1 << 30
	}
	if cfg.SpoolSegmentBytes <= 0 {
		cfg.SpoolSegmentBytes = min(max(cfg.SpoolMaxBytes/16, 64<<10), 64<<20)
	}
	if cfg.SpoolSyncInterval <= 0 {
		cfg.SpoolSyncInterval = 100 * time.Millisecond
	}
	r := &Recorder{
		cfg: cfg, log: cfg.Logger,
		queue: make(chan Record, cfg.QueueSize), abandon: make(chan struct{}), done: make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if cfg.SpoolDir != "" {
		sp, err := openSpool(spoolConfig{
			dir: cfg.SpoolDir, maxBytes: cfg.SpoolMaxBytes, segmentBytes: cfg.SpoolSegmentBytes,
			syncInterval: cfg.SpoolSyncInterval, log: r.log,
		})
		if err != nil {
			return nil, err
		}
		r.spool = sp
	}
	w := &writer{
		r: r, cfg: &r.cfg, spool: r.spool, up: true,
		batch: make([]Record, 0, cfg.BatchSize),
		calls: make(chan storeCall), results: make(chan error, 1),
		timer: time.NewTimer(time.Hour), wtimer: time.NewTimer(time.Hour),
	}
	w.timer.Stop()
	w.wtimer.Stop()
	go r.callStore(w.calls, w.results)
	go w.run()
	return r, nil
}

// Record queues rec for the store and returns at once: see Recorder for
// where a record goes when the queue is full. It returns ErrClosed after
// Close and ErrDropped when the record was lost.
func (r *Recorder) Record(rec Record) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	select {
	case r.queue <- rec:
		return nil
	default:
	}
	return r.overflow(rec)
}

// overflow handles a record that found the queue full.
func (r *Recorder) overflow(rec Record) error {
	if r.spool != nil {
		err := r.spool.append([]Record{rec})
		if err == nil {
			return nil
		}
		r.spoolFailed(err)
	}
	if r.cfg.MaxBlock > 0 {
		t := time.NewTimer(r.cfg.MaxBlock)
		defer t.Stop()
		select {
		case r.queue <- rec:
			return nil
		case <-t.C:
		}
	}
	n := r.dropped.Add(1)
	if r.dropLog.allow(10 * time.Second) {
		r.log.Error("usage records dropped: queue full and spool disabled or full", "dropped_total", n, "spool", r.spool != nil)
	}
	return ErrDropped
}

func (r *Recorder) spoolFailed(err error) {
	if r.spoolLog.allow(10 * time.Second) {
		if errors.Is(err, errSpoolFull) {
			r.log.Error("usage spool full", "dir", r.cfg.SpoolDir, "max_bytes", r.cfg.SpoolMaxBytes, "spooled", r.spool.records.Load())
		} else {
			r.log.Error("usage spool write failed", "dir", r.cfg.SpoolDir, "error", err)
		}
	}
}

// Pending reports how many records wait in memory (RecorderStats.Queued).
func (r *Recorder) Pending() int { return int(int64(len(r.queue)) + r.inHand.Load()) }

// Stats returns the Recorder's counters.
func (r *Recorder) Stats() RecorderStats {
	st := RecorderStats{
		Queued:      int64(len(r.queue)) + r.inHand.Load(),
		Replayed:    r.replayed.Load(),
		Written:     r.written.Load(),
		Dropped:     r.dropped.Load(),
		StoreErrors: r.storeErrors.Load(),
	}
	if r.spool != nil {
		st.Spooled = r.spool.records.Load()
		st.SpooledTotal = r.spool.appended.Load()
	}
	return st
}

// Close stops taking records (Record returns ErrClosed) and writes every
// record in memory to the store; if the store is down (or goes down), to
// the spool, which it then syncs. Records already spooled stay there for
// the next Recorder on the same SpoolDir: Close does not wait to replay
// them. It returns once every record is stored or durably spooled.
//
// If ctx ends first, Close stops waiting on the store (a write in flight is
// abandoned) and spools what is left; only what the spool cannot take (no
// spool, or spool full) is lost, counted in Dropped and reported in the
// error, which wraps ctx's error. So with no spool and the store down, a
// ctx without a deadline makes Close wait for the store. Close may be
// called more than once.
func (r *Recorder) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.queue)
		r.mu.Unlock()
	})
	select {
	case <-r.done:
	case <-ctx.Done():
		r.abandonOnce.Do(func() { close(r.abandon) })
		<-r.done
	}
	err := r.closeErr
	if n := r.lost.Load(); n > 0 {
		cause := ctx.Err()
		if cause == nil {
			cause = ErrDropped
		}
		err = errors.Join(fmt.Errorf("usage: %d records lost at close: %w", n, cause), err)
	}
	return err
}

type storeCall struct {
	ctx  context.Context
	recs []Record
}

// callStore makes the store calls, one at a time, so that the writer can
// give up waiting on one that overruns WriteTimeout without giving up the
// records: a call that never returns keeps this goroutine, not the writer.
func (r *Recorder) callStore(calls <-chan storeCall, results chan<- error) {
	for c := range calls {
		results <- r.cfg.Store.InsertRecords(c.ctx, c.recs)
	}
}

// writer is the state of the writer goroutine; only it touches these
// fields.
type writer struct {
	r     *Recorder
	cfg   *RecorderConfig
	spool *spool

	batch []Record  // records taken from the queue
	due   time.Time // when batch must be flushed, however full
	// held is a batch neither the store nor the spool took; while it is
	// held, nothing more is taken from the queue.
	held   []Record
	replay []Record // records read from the spool, not yet stored
	// heldRejects and replayRejects count the failures of held and
	// replay (see storeRetried).
	heldRejects   int
	replayRejects int
	lastOK        bool // the last store write succeeded

	up       bool
	backoff  time.Duration
	probeAt  time.Time // when down: the earliest next store write
	replayAt time.Time // earliest next read from the spool after a read error
	busy     bool      // a store call timed out and has not returned yet
	closing  bool      // the queue is closed and empty
	abandon  bool      // Close's ctx ended: no more store calls

	calls   chan storeCall
	results chan error
	timer   *time.Timer // wait's deadline
	wtimer  *time.Timer // WriteTimeout
}

func (w *writer) run() {
	defer w.finish()
	for {
		now := time.Now()
		w.fill(now)
		switch {
		case w.abandon:
			w.abandonAll()
			return
		case w.held != nil:
			if w.canCallStore(now) {
				w.retryHeld()
				continue
			}
		case len(w.batch) > 0 && (len(w.batch) >= w.cfg.BatchSize || w.closing || !now.Before(w.due)):
			w.flush(now)
			continue
		case w.closing && len(w.batch) == 0:
			return
		case w.canReplay(now):
			w.replayOne(now)
			continue
		}
		w.wait(now)
	}
}

// fill moves queued records into the batch without waiting.
func (w *writer) fill(now time.Time) {
	for w.held == nil && !w.closing && len(w.batch) < w.cfg.BatchSize {
		select {
		case rec, ok := <-w.r.queue:
			if !ok {
				w.closing = true
				return
			}
			w.add(rec, now)
		default:
			return
		}
	}
}

func (w *writer) add(rec Record, now time.Time) {
	if len(w.batch) == 0 {
		w.due = now.Add(w.cfg.FlushInterval)
	}
	w.batch = append(w.batch, rec)
	w.r.inHand.Add(1)
}

func (w *writer) canCallStore(now time.Time) bool {
	return !w.busy && !w.abandon && (w.up || !now.Before(w.probeAt))
}

func (w *writer) spoolWaiting() bool {
	return w.spool != nil && (w.replay != nil || w.spool.records.Load() > 0)
}

func (w *writer) canReplay(now time.Time) bool {
	return !w.closing && w.spoolWaiting() && !now.Before(w.replayAt) && w.canCallStore(now)
}

// wait blocks until there may be something to do: a record, a deadline
// (batch due, probe, replay retry), the end of a timed-out store call, or
// Close's ctx ending.
func (w *writer) wait(now time.Time) {
	var queue <-chan Record
	if w.held == nil && !w.closing && len(w.batch) < w.cfg.BatchSize {
		queue = w.r.queue
	}
	var deadline time.Time
	earliest := func(t time.Time) {
		if deadline.IsZero() || t.Before(deadline) {
			deadline = t
		}
	}
	if len(w.batch) > 0 {
		earliest(w.due)
	}
	if !w.busy && !w.up && (w.held != nil || w.spoolWaiting()) {
		earliest(w.probeAt)
	}
	if !w.busy && w.up && !w.closing && w.spoolWaiting() {
		earliest(w.replayAt)
	}
	var timer <-chan time.Time
	if !deadline.IsZero() {
		w.timer.Reset(deadline.Sub(now))
		defer w.timer.Stop()
		timer = w.timer.C
	}
	var results <-chan error
	if w.busy {
		results = w.results
	}
	var abandon <-chan struct{}
	if !w.abandon {
		abandon = w.r.abandon
	}
	select {
	case rec, ok := <-queue:
		if !ok {
			w.closing = true
			return
		}
		w.add(rec, time.Now())
	case <-timer:
	case <-results:
		w.busy = false // the late result of a timed-out write: its batch was spooled
	case <-abandon:
		w.abandon = true
	}
}

// flush writes the batch to the store, or to the spool when the store is
// down or fails, or holds it when neither takes it.
func (w *writer) flush(now time.Time) {
	recs := w.batch
	n := int64(len(recs))
	if w.canCallStore(now) {
		err := w.store(recs)
		if err == nil {
			w.r.written.Add(n)
			w.r.inHand.Add(-n)
			w.setUp()
			w.batch = recs[:0]
			return
		}
		w.failed(err)
	}
	if w.toSpool(recs) {
		w.r.inHand.Add(-n)
		if !w.busy { // else a timed-out store call may still read recs
			w.batch = recs[:0]
			return
		}
	} else {
		w.held = recs
	}
	w.batch = make([]Record, 0, w.cfg.BatchSize)
}

// retryHeld probes the store with the held batch, and failing that tries
// the spool again.
func (w *writer) retryHeld() {
	before := int64(len(w.held))
	rest, stored, err := w.storeRetried(w.held, &w.heldRejects)
	w.r.written.Add(stored)
	w.r.inHand.Add(-(before - int64(len(rest))))
	if err == nil {
		w.held, w.heldRejects = nil, 0
		w.setUp()
		return
	}
	w.held = rest
	w.failed(err)
	if w.toSpool(w.held) {
		w.r.inHand.Add(-int64(len(w.held)))
		w.held, w.heldRejects = nil, 0
	}
}

// replayOne stores the next batch of spooled records.
func (w *writer) replayOne(now time.Time) {
	if w.replay == nil {
		recs, err := w.spool.next(w.cfg.BatchSize)
		if err != nil || len(recs) == 0 {
			if err != nil {
				w.r.log.Error("usage spool: replay read failed; retrying", "error", err, "retry_in", w.cfg.RetryInterval)
			}
			w.replayAt = now.Add(w.cfg.RetryInterval)
			return
		}
		w.replay, w.replayRejects = recs, 0
	}
	rest, stored, err := w.storeRetried(w.replay, &w.replayRejects)
	w.r.replayed.Add(stored)
	if err != nil {
		w.replay = rest // tried again first
		w.failed(err)
		return
	}
	w.spool.commit()
	w.replay = nil
	w.setUp()
}

// storeRetried writes a batch that is being retried (held, or replayed) and
// returns the records not stored yet. A batch that failed twice (timeouts
// aside) may hold a record the store refuses for what it is, one it will
// never take, rather than for an outage; from its third try it is written
// one record at a time (isolate), so that such a record is dropped
// (logged, counted) instead of blocking every record behind it forever.
// During a real outage that costs one or two single-record writes a probe.
func (w *writer) storeRetried(recs []Record, rejects *int) ([]Record, int64, error) {
	if *rejects >= 2 {
		return w.isolate(recs)
	}
	if err := w.store(recs); err != nil {
		if !w.busy {
			*rejects++
		}
		return recs, 0, err
	}
	return nil, int64(len(recs)), nil
}

// isolate writes recs one at a time. A record the store refuses while it
// takes the record after it (or, for the last one, the write just before)
// is poison: dropped. Any other failure looks like an outage: isolate stops
// and returns the records from the failed one on.
func (w *writer) isolate(recs []Record) ([]Record, int64, error) {
	var stored int64
	prevOK := w.lastOK
	for i := 0; i < len(recs); i++ {
		err := w.store(recs[i : i+1])
		if err == nil {
			stored++
			prevOK = true
			continue
		}
		if w.busy || w.abandon {
			return recs[i:], stored, err
		}
		bad := recs[i]
		switch {
		case i+1 < len(recs):
			if err2 := w.store(recs[i+1 : i+2]); err2 != nil {
				return recs[i:], stored, err2
			}
			stored++
			i++
		case !prevOK:
			return recs[i:], stored, err
		}
		w.r.storeErrors.Add(1)
		w.r.dropped.Add(1)
		w.r.log.Error("usage record dropped: the store refuses it while it takes others",
			"request_id", bad.RequestID, "key_id", bad.KeyID, "error", err)
		prevOK = true
	}
	return nil, stored, nil
}

func (w *writer) toSpool(recs []Record) bool {
	if w.spool == nil {
		return false
	}
	if err := w.spool.append(recs); err != nil {
		w.r.spoolFailed(err)
		return false
	}
	return true
}

// store writes recs, waiting at most WriteTimeout. The caller must not
// modify recs if it returned errWriteTimeout or errAbandoned (w.busy): the
// call may still be reading them.
func (w *writer) store(recs []Record) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.WriteTimeout)
	defer cancel()
	w.calls <- storeCall{ctx: ctx, recs: recs}
	w.wtimer.Reset(w.cfg.WriteTimeout)
	defer w.wtimer.Stop()
	w.lastOK = false
	select {
	case err := <-w.results:
		w.lastOK = err == nil
		return err
	case <-w.wtimer.C:
		w.busy = true
		return fmt.Errorf("%w after %v", errWriteTimeout, w.cfg.WriteTimeout)
	case <-w.r.abandon:
		w.busy = true
		w.abandon = true
		return errAbandoned
	}
}

// failed notes a failed store write: the store is down and the next probe
// is due after the backoff.
func (w *writer) failed(err error) {
	if errors.Is(err, errAbandoned) {
		return
	}
	w.r.storeErrors.Add(1)
	if w.up {
		w.up = false
		w.backoff = w.cfg.RetryInterval
		w.r.log.Warn("usage store unavailable; spooling records until it is back",
			"error", err, "spool", w.spool != nil, "retry_in", w.backoff)
		if w.cfg.OnStoreState != nil {
			w.cfg.OnStoreState(false)
		}
	} else {
		w.backoff = min(2*w.backoff, w.cfg.MaxRetryInterval)
		w.r.log.Debug("usage store still unavailable", "error", err, "retry_in", w.backoff)
	}
	w.probeAt = time.Now().Add(w.backoff)
}

func (w *writer) setUp() {
	if w.up {
		return
	}
	w.up = true
	var spooled int64
	if w.spool != nil {
		spooled = w.spool.records.Load()
	}
	w.r.log.Info("usage store available again", "spooled", spooled)
	if w.cfg.OnStoreState != nil {
		w.cfg.OnStoreState(true)
	}
}

// abandonAll runs when Close's ctx ended: what is in memory goes to the
// spool, or is lost when the spool cannot take it.
func (w *writer) abandonAll() {
	w.spoolOrLose(w.held)
	w.held = nil
	w.spoolOrLose(w.batch)
	w.batch = nil
	var batch []Record
	for rec := range w.r.queue { // closed: Close closes it before abandoning
		w.r.inHand.Add(1)
		if batch = append(batch, rec); len(batch) == w.cfg.BatchSize {
			w.spoolOrLose(batch)
			batch = batch[:0]
		}
	}
	w.spoolOrLose(batch)
}

func (w *writer) spoolOrLose(recs []Record) {
	if len(recs) == 0 {
		return
	}
	n := int64(len(recs))
	w.r.inHand.Add(-n)
	if w.toSpool(recs) {
		return
	}
	w.r.dropped.Add(n)
	w.r.lost.Add(n)
	w.r.log.Error("usage records lost at close: store unavailable and spool disabled or full", "records", n)
}

func (w *writer) finish() {
	close(w.calls) // callStore returns once a call in flight, if any, does
	if w.spool != nil {
		w.r.closeErr = w.spool.close()
	}
	close(w.r.done)
}

// rateLimit lets a log line through at most once per interval.
type rateLimit struct{ next atomic.Int64 }

func (l *rateLimit) allow(every time.Duration) bool {
	now := time.Now().UnixNano()
	next := l.next.Load()
	return now >= next && l.next.CompareAndSwap(next, now+int64(every))
}
