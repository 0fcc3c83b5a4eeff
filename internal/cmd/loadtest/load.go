package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// target is one server the load goes to.
type target struct {
	name   string // direct, bare or relay
	url    string // POST url of /v1/messages
	header http.Header
	proc   *child // the process whose CPU and RSS are this target's
	sent   atomic.Int64
}

// loadgen sends the load; one client (one transport, one pool) serves
// every target, so they are measured through the same client code.
type loadgen struct {
	client     *http.Client
	tr         *http.Transport
	events     int // SSE events per stream, message_start to message_stop
	nonStream  []byte
	streamBody []byte
}

func newLoadgen(conns, deltas, promptBytes int) *loadgen {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	prompt := "Say hello in a few words."
	if pad := promptBytes - len(prompt); pad > 0 {
		prompt += strings.Repeat(" lorem ipsum dolor sit amet", pad/27+1)[:pad]
	}
	req := `{"model":"claude-sonnet-4-5-20250929","max_tokens":1024,"messages":[{"role":"user","content":"` + prompt + `"}]`
	return &loadgen{
		client:     &http.Client{Transport: tr, Timeout: 2 * time.Minute},
		tr:         tr,
		events:     deltas + 6, // message_start, content_block_start, ping, deltas, content_block_stop, message_delta, message_stop
		nonStream:  []byte(req + `}`),
		streamBody: []byte(req + `,"stream":true}`),
	}
}

// setEventDelay makes the fake at upstreamURL sleep d between stream
// events from now on.
func (lg *loadgen) setEventDelay(ctx context.Context, upstreamURL string, d time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, upstreamURL+delayPath+"?d="+d.String(), nil)
	if err != nil {
		return err
	}
	resp, err := lg.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("event delay: status %d", resp.StatusCode)
	}
	return nil
}

// worker is one load goroutine's reusable state.
type worker struct {
	lg  *loadgen
	buf []byte
	br  *bufio.Reader
	s   samples
}

func (lg *loadgen) newWorker() *worker {
	return &worker{lg: lg, buf: make([]byte, 16<<10), br: bufio.NewReaderSize(nil, 16<<10)}
}

// post sends one message request and checks the status.
func (w *worker) post(ctx context.Context, t *target, stream bool) (*http.Response, error) {
	body := w.lg.nonStream
	if stream {
		body = w.lg.streamBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = t.header // only read by the transport, so shared
	t.sent.Add(1)
	resp, err := w.lg.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		n, _ := io.ReadFull(resp.Body, w.buf[:min(len(w.buf), 300)])
		resp.Body.Close()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, w.buf[:n])
	}
	return resp, nil
}

// message makes one non-streamed call, timed from start.
func (w *worker) message(ctx context.Context, t *target, start time.Time) {
	resp, err := w.post(ctx, t, false)
	if err != nil {
		w.s.fail(err)
		return
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, w.buf)
	resp.Body.Close()
	switch {
	case err != nil:
		w.s.fail(err)
	case n == 0:
		w.s.fail(errors.New("empty answer"))
	default:
		w.s.lat = append(w.s.lat, time.Since(start))
	}
}

// stream makes one streamed call and reads it event by event, noting when
// each event is complete. With paced > 0 (the fake's event delay) it keeps
// TTFB and gaps, and counts the events that came less than 0.6 × paced
// after the one before (early) and those whose bytes were already read
// with the previous one (coalesced): a relay that holds events back and
// sends them together shows up in both.
func (w *worker) stream(ctx context.Context, t *target, start time.Time, paced time.Duration) {
	resp, err := w.post(ctx, t, true)
	if err != nil {
		w.s.fail(err)
		return
	}
	defer resp.Body.Close()
	w.br.Reset(resp.Body)
	events, last := 0, start
	stopped := false
	for {
		line, err := w.br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF && len(line) == 0 {
				break
			}
			w.s.fail(fmt.Errorf("stream cut after %d events: %w", events, err))
			return
		}
		if bytes.HasPrefix(line, []byte("event: message_stop")) {
			stopped = true
		}
		if len(line) > 2 || (len(line) == 2 && line[0] != '\r') {
			continue
		}
		// A blank line ends an event.
		now := time.Now()
		if paced > 0 && w.br.Buffered() > 0 {
			w.s.coalesced++
		}
		if paced > 0 {
			if events == 0 {
				w.s.ttfb = append(w.s.ttfb, now.Sub(start))
			} else {
				gap := now.Sub(last)
				w.s.gaps = append(w.s.gaps, gap)
				if gap < paced*6/10 {
					w.s.early++
				}
			}
		}
		last = now
		events++
	}
	if events != w.lg.events || !stopped {
		w.s.fail(fmt.Errorf("stream had %d events (want %d), message_stop seen: %v", events, w.lg.events, stopped))
		return
	}
	w.s.events += int64(events)
	w.s.lat = append(w.s.lat, time.Since(start))
}

// closedLoop runs conc workers, each sending its next request when the
// previous one is done, until d is over. Requests under way at the end are
// let finish (and counted), so none is cut and called an error.
func (lg *loadgen) closedLoop(ctx context.Context, conc int, d time.Duration, do func(*worker, time.Time)) (samples, time.Duration) {
	start := time.Now()
	end := start.Add(d)
	workers := make([]*worker, conc)
	var wg sync.WaitGroup
	for i := range workers {
		w := lg.newWorker()
		workers[i] = w
		wg.Go(func() {
			for now := time.Now(); now.Before(end) && ctx.Err() == nil; now = time.Now() {
				do(w, now)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all samples
	for _, w := range workers {
		all.merge(&w.s)
	}
	return all, elapsed
}

// rateLoop sends non-streamed requests at a fixed rate for d, whether or
// not the earlier ones are answered (an open loop), each timed from when
// it was due so that a stall shows in the latency. At most maxInflight are
// outstanding; a request due beyond that is counted as dropped.
func (lg *loadgen) rateLoop(ctx context.Context, t *target, rate float64, d time.Duration, maxInflight int) (s samples, dropped int64, elapsed time.Duration) {
	interval := time.Duration(float64(time.Second) / rate)
	idle := make(chan *worker, maxInflight)
	for range maxInflight {
		idle <- lg.newWorker()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	total := int(d / interval)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		var w *worker
		select {
		case w = <-idle:
		default:
			dropped++
			continue
		}
		wg.Go(func() {
			w.message(ctx, t, due)
			mu.Lock()
			s.merge(&w.s)
			mu.Unlock()
			w.s = samples{}
			idle <- w
		})
	}
	wg.Wait()
	return s, dropped, time.Since(start)
}

// openResult is the open-streams phase for one target.
type openResult struct {
	Target       string  `json:"target"`
	Streams      int     `json:"streams"`
	Opened       int64   `json:"opened"`
	Errors       int64   `json:"errors"`
	FirstError   string  `json:"first_error,omitempty"`
	OpenTime     float64 `json:"open_seconds"`
	IdleRSSKiB   int64   `json:"idle_rss_kib"`
	OpenRSSKiB   int64   `json:"open_rss_kib"`
	PerStreamKiB float64 `json:"rss_per_stream_kib"`
}

// openStreams opens n streams to t at once (the fake holding each after
// its first event), measures t's RSS with all of them open, then hangs up.
func (lg *loadgen) openStreams(ctx context.Context, t *target, n int, timeout time.Duration) openResult {
	res := openResult{Target: t.name, Streams: n, IdleRSSKiB: rssKiB(t.proc.pid())}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opened, failed atomic.Int64
	var firstErr sync.Once
	dialing := make(chan struct{}, 64) // connections being set up at once
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			dialing <- struct{}{}
			body, err := lg.openStream(ctx, t)
			<-dialing
			if err != nil {
				if ctx.Err() == nil {
					failed.Add(1)
					firstErr.Do(func() { res.FirstError = err.Error() })
				}
				return
			}
			defer body.Close()
			opened.Add(1)
			<-ctx.Done() // hold the stream open until the phase ends
		})
	}
	deadline := time.Now().Add(timeout)
	for opened.Load()+failed.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	res.OpenTime = time.Since(start).Seconds()
	time.Sleep(500 * time.Millisecond) // let the servers settle
	res.OpenRSSKiB = rssKiB(t.proc.pid())
	res.Opened = opened.Load()
	cancel()
	wg.Wait()
	res.Errors = int64(n) - res.Opened // failed, or not open in time
	if res.Opened > 0 {
		res.PerStreamKiB = float64(res.OpenRSSKiB-res.IdleRSSKiB) / float64(res.Opened)
	}
	return res
}

// openStream starts a stream and reads its first event, returning the
// body still open. Closing it, or ctx ending, closes the connection.
func (lg *loadgen) openStream(ctx context.Context, t *target) (io.Closer, error) {
	w := &worker{lg: lg, buf: make([]byte, 512)}
	resp, err := w.post(ctx, t, true)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(resp.Body, 1024)
	for { // up to the blank line that ends message_start
		line, err := br.ReadSlice('\n')
		if err != nil {
			resp.Body.Close()
			return nil, err
		}
		if len(line) == 1 {
			return resp.Body, nil
		}
	}
}
