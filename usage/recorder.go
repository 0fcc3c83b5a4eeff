package usage

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// RecorderConfig configures a Recorder. Zero values are the defaults noted.
type RecorderConfig struct {
	// Store receives the records. Required.
	Store Store
	// BatchSize is the most records written in one call. Zero means 256.
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill.
	// Zero means 250 ms.
	FlushInterval time.Duration
	// QueueSize bounds the records waiting in memory. Zero means 65,536.
	QueueSize int
	// RetryInterval is the first wait after a failed write; it doubles up
	// to 30 s. Zero means 500 ms.
	RetryInterval time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Recorder writes records asynchronously in batches, so a client never
// waits on the usage store. A failed batch is kept and retried (the store
// is idempotent on request id, so a retry never counts twice).
type Recorder struct {
	cfg   RecorderConfig
	log   *slog.Logger
	queue chan Record
	done  chan struct{}

	mu      sync.RWMutex
	closed  bool
	closeCh chan struct{}
	once    sync.Once
}

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("usage: recorder closed")

// NewRecorder starts a Recorder; Close drains it.
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	if cfg.Store == nil {
		return nil, errors.New("usage: RecorderConfig.Store is required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 250 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 65536
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 500 * time.Millisecond
	}
	r := &Recorder{cfg: cfg, log: cfg.Logger, queue: make(chan Record, cfg.QueueSize), done: make(chan struct{}), closeCh: make(chan struct{})}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	go r.run()
	return r, nil
}

// Record queues rec. It returns at once unless the queue is full, in which
// case it waits for room: losing a record is worse than a late return
// (the client's response is complete by the time Record is called).
func (r *Recorder) Record(rec Record) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	r.queue <- rec
	return nil
}

// Pending reports how many records wait in the queue.
func (r *Recorder) Pending() int { return len(r.queue) }

// Close stops taking records and writes every queued one. If ctx ends
// first, it returns ctx's error; records not yet written are logged as
// lost by count.
func (r *Recorder) Close(ctx context.Context) error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.queue)
		r.mu.Unlock()
	})
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		close(r.closeCh) // tell run to stop retrying
		<-r.done
		return ctx.Err()
	}
}

func (r *Recorder) run() {
	defer close(r.done)
	batch := make([]Record, 0, r.cfg.BatchSize)
	timer := time.NewTimer(r.cfg.FlushInterval)
	defer timer.Stop()
	for {
		select {
		case rec, ok := <-r.queue:
			if !ok {
				r.write(batch)
				return
			}
			batch = append(batch, rec)
			if len(batch) < r.cfg.BatchSize {
				continue
			}
		case <-timer.C:
		}
		if len(batch) > 0 {
			if !r.write(batch) {
				r.drainLost()
				return
			}
			batch = batch[:0]
		}
		timer.Reset(r.cfg.FlushInterval)
	}
}

// write stores batch, retrying with backoff until it succeeds or Close
// gives up. It reports false when it gave up.
func (r *Recorder) write(batch []Record) bool {
	if len(batch) == 0 {
		return true
	}
	wait := r.cfg.RetryInterval
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := r.cfg.Store.InsertRecords(ctx, batch)
		cancel()
		if err == nil {
			return true
		}
		r.log.Warn("writing usage records failed; retrying", "records", len(batch), "error", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-r.closeCh:
			r.log.Error("usage records lost at shutdown", "records", len(batch))
			return false
		}
		wait = min(wait*2, 30*time.Second)
	}
}

func (r *Recorder) drainLost() {
	n := 0
	for range r.queue {
		n++
	}
	if n > 0 {
		r.log.Error("usage records lost at shutdown", "records", n)
	}
}
