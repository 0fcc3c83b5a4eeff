package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/internal/sniff"
	"github.com/relaystation/relay/internal/tokenizer"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/usage"
)

// route is what the proxy does with a path.
type route int

const (
	routeNone route = iota
	routeRoot
	routeMessages
	routeCountTokens
	routeModels
	routeModel
	routePassthrough
)

// match maps a (mount-relative) path to a route and the methods it allows.
// Paths that are not clean (dot segments, doubled or encoded slashes) match
// nothing: they are answered 404 rather than normalised, so no path can
// reach a route it does not spell.
func match(r *http.Request) (route, string) {
	p := r.URL.Path
	if p == "/" || p == "" {
		return routeRoot, "GET, HEAD"
	}
	if !cleanPath(r) {
		return routeNone, ""
	}
	switch {
	case p == "/v1/messages":
		return routeMessages, "POST"
	case p == "/v1/messages/count_tokens":
		return routeCountTokens, "POST"
	case p == "/v1/models":
		return routeModels, "GET"
	case strings.HasPrefix(p, "/v1/models/") && !strings.Contains(p[len("/v1/models/"):], "/"):
		return routeModel, "GET"
	case p == "/v1/messages/batches" || strings.HasPrefix(p, "/v1/messages/batches/"),
		p == "/v1/files" || strings.HasPrefix(p, "/v1/files/"):
		return routePassthrough, ""
	}
	return routeNone, ""
}

func (rl *Relay) proxyHandler() http.Handler {
	auth := middleware.Authenticate(rl.keys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := middleware.InfoFrom(r.Context())
		rt, allow := match(r)
		if rt == routeNone {
			rl.fail(w, r, apierror.New(http.StatusNotFound, "not found: "+r.Method+" "+r.URL.Path))
			return
		}
		if allow != "" && !allowed(allow, r.Method) {
			e := apierror.New(http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on "+r.URL.Path)
			e.Header = http.Header{"Allow": {allow}}
			rl.fail(w, r, e)
			return
		}
		if rt == routeRoot { // Claude Code's start-up probe: answer fast, no key needed
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
			}
			return
		}
		auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch rt {
			case routeMessages, routeCountTokens:
				rl.serveModelCall(w, r, info, rt == routeMessages)
			case routeModels, routeModel:
				rl.serveModels(w, r, info, rt == routeModel)
			default:
				rl.servePassthrough(w, r, info)
			}
		})).ServeHTTP(w, r)
	})
}

// jsonContentType accepts what the SDKs and Claude Code send
// (application/json, with or without parameters), any +json type, and no
// content type at all.
func jsonContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// cleanPath reports whether the request path is canonical: no dot
// segments, no doubled slashes, no encoded slash or backslash.
func cleanPath(r *http.Request) bool {
	p := r.URL.Path
	if p == "" || p[0] != '/' {
		return false
	}
	if c := path.Clean(p); c != p && c+"/" != p {
		return false
	}
	if strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") || strings.HasSuffix(p, "/.") {
		return false
	}
	raw := strings.ToLower(r.URL.RawPath)
	return !strings.Contains(raw, "%2f") && !strings.Contains(raw, "%5c") && !strings.Contains(p, "\\")
}

func allowed(allow, method string) bool {
	for _, m := range strings.Split(allow, ", ") {
		if m == method {
			return true
		}
	}
	return false
}

// fail writes e for the request and notes its type for the access log.
func (rl *Relay) fail(w http.ResponseWriter, r *http.Request, e *apierror.Error) {
	info := middleware.InfoFrom(r.Context())
	id := ""
	if info != nil {
		info.ErrorType = e.Type
		id = info.RequestID
	}
	apierror.Write(w, e, id)
}

// readBody reads a request body of at most MaxBodyBytes. A declared
// Content-Length over the limit is refused before a byte is read.
func (rl *Relay) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apierror.Error) {
	limit := rl.cfg.MaxBodyBytes
	tooLarge := apierror.New(http.StatusRequestEntityTooLarge, "request body is larger than the limit")
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, tooLarge
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(rl.now().Add(rl.cfg.BodyReadTimeout)) // not every writer supports it
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), r.ContentLength, limit)
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return nil, tooLarge
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set("Connection", "close")
			return nil, apierror.New(http.StatusRequestTimeout, "the request body was not received in time")
		}
		return nil, apierror.New(http.StatusBadRequest, "could not read the request body")
	}
	return body, nil
}

// readAll reads a request body whose length the client announced (n > 0)
// into exactly that much memory, or else (chunked) into a growing buffer.
// The server's body reader stops at the announced length and reports a
// shorter body as io.ErrUnexpectedEOF.
func readAll(body io.Reader, n, limit int64) ([]byte, error) {
	if n > 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(4096, limit+1)))
	_, err := buf.ReadFrom(body)
	return buf.Bytes(), err
}

// attempt is one upstream exchange and what was learnt from it.
type attempt struct {
	rec       usage.Record
	body      []byte // the request body, for estimates
	start     time.Time
	firstByte time.Time
	res       quota.Reservation // held against the key's limits
	reserved  bool
}

// serveModelCall relays POST /v1/messages (billable) and
// /v1/messages/count_tokens (not billable).
func (rl *Relay) serveModelCall(w http.ResponseWriter, r *http.Request, info *middleware.Info, billable bool) {
	if !jsonContentType(r.Header.Get("Content-Type")) {
		rl.fail(w, r, apierror.New(http.StatusBadRequest, "content-type: the request body must be application/json"))
		return
	}
	body, e := rl.readBody(w, r)
	if e != nil {
		rl.fail(w, r, e)
		return
	}
	if !utf8.Valid(body) {
		rl.fail(w, r, apierror.New(http.StatusBadRequest, "the request body is not valid UTF-8"))
		return
	}
	req, err := sniff.Parse(body)
	if err != nil {
		rl.fail(w, r, apierror.New(http.StatusBadRequest, err.Error()))
		return
	}
	if req.Model == "" {
		rl.fail(w, r, apierror.New(http.StatusBadRequest, "model: field required"))
		return
	}
	info.Model, info.Stream = req.Model, req.Stream && billable
	key := info.Key
	if !key.AllowsModel(req.Model) {
		rl.fail(w, r, middleware.KeyError(keys.ErrModelNotAllowed))
		return
	}
	a := &attempt{body: body, start: info.Start, rec: usage.Record{
		RequestID: info.RequestID, KeyID: key.ID, Method: r.Method, Path: r.URL.Path,
		Model: req.Model, Stream: info.Stream, ClientIP: clientIP(r), UserAgent: r.UserAgent(),
		SessionID: r.Header.Get("X-Claude-Code-Session-Id"),
	}}
	if billable {
		res, e := rl.reserve(r.Context(), key, req.Model, body, req.MaxTokens)
		if e != nil {
			rl.fail(w, r, e)
			return
		}
		a.res, a.reserved = res, true
	}
	call := upstream.Call{Client: r, Body: body, Model: req.Model, AffinityKey: upstream.AffinityKey(r.Header, req.UserID, key.ID)}
	rl.forward(w, r, info, call, a, billable)
}

// forward sends the request upstream and streams the answer back. With a
// non-nil billable attempt, usage is extracted and recorded.
func (rl *Relay) forward(w http.ResponseWriter, r *http.Request, info *middleware.Info, call upstream.Call, a *attempt, billable bool) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(rl.stopCtx, cancel) // Close's deadline cuts streams
	defer stop()

	res, err := rl.pool.Do(ctx, call)
	if err != nil {
		e := apierror.From(err, upstream.MapError)
		if a != nil && a.reserved {
			rl.releaseQuota(ctx, a.res) // nothing reached the upstream
			a.reserved = false
		}
		if billable {
			a.rec.Status, a.rec.ErrorType = e.Status, e.Type
			if r.Context().Err() != nil {
				a.rec.Status = usage.StatusClientClosed
			}
			rl.record(a, info)
		}
		if r.Context().Err() == nil {
			rl.log.Warn("upstream request failed", "request_id", info.RequestID, "error", err)
			rl.fail(w, r, e)
		}
		return
	}
	var outcome upstream.Outcome
	defer func() { res.Release(outcome) }()
	resp := res.Response
	info.Upstream = res.Upstream
	if a != nil {
		a.rec.Upstream = res.Upstream
	}
	if resp.StatusCode == http.StatusUnauthorized {
		// The upstream refused the relay's own credential: the user's key
		// is fine, so a 401 would send them to fix the wrong thing.
		rl.log.Error("the upstream refused the relay's credential", "request_id", info.RequestID, "upstream", res.Upstream)
		e := &apierror.Error{Status: http.StatusBadGateway, Type: apierror.API, Message: "the relay's upstream credential was refused; tell the relay's operator"}
		if billable {
			a.rec.Status, a.rec.ErrorType = e.Status, e.Type
			rl.record(a, info)
		}
		rl.fail(w, r, e)
		return
	}

	h := w.Header()
	upstream.CopyResponseHeaders(h, resp.Header)
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if stream {
		// Every event must reach the client at once: no write deadline, no
		// compression, no proxy buffering.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		h.Del("Content-Encoding")
		h.Set("X-Accel-Buffering", "no")
	} else if resp.ContentLength >= 0 && !resp.Uncompressed {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	if resp.StatusCode >= 400 {
		info.ErrorType = apierror.TypeFor(resp.StatusCode)
	} else if a != nil && a.reserved && !rl.cfg.NoLimitHeaders {
		a.res.Standing.Headers(h) // the key's own limits, not the upstream account's
	}
	if a != nil && a.reserved && stream {
		defer rl.renewWhileStreaming(a.res)()
	}
	if stream {
		rl.metrics.streamStarted()
		defer rl.metrics.streamEnded()
	}

	if !billable && !stream && isBatchPath(r.URL.Path) && isJSON(resp.Header) {
		rl.relayRewritten(w, r, resp, res.BaseURL)
		return
	}
	var sx *usage.StreamExtractor
	var tee *capture
	switch {
	case billable && stream && resp.StatusCode == http.StatusOK:
		sx = new(usage.StreamExtractor)
	case billable && !stream:
		tee = new(capture) // a JSON answer: kept (bounded) to read its usage
	}

	// An upstream that stops sending mid-answer (no event, not even a
	// ping, for StreamIdleTimeout) is cut rather than left to hold the
	// client and a connection forever.
	var idleFired atomic.Bool
	idle := time.AfterFunc(rl.cfg.StreamIdleTimeout, func() { idleFired.Store(true); cancel() })
	defer idle.Stop()
	w.WriteHeader(resp.StatusCode)
	clientGone, upErr := rl.copyBody(w, resp.Body, stream, sx, tee, a, idle)
	if r.Context().Err() != nil {
		clientGone = true
	}
	if idleFired.Load() && !clientGone {
		rl.log.Warn("upstream went silent mid-answer; cut", "request_id", info.RequestID, "upstream", res.Upstream, "idle", rl.cfg.StreamIdleTimeout)
	}
	if !billable {
		outcome.Failed = upErr != nil && !clientGone
		return
	}
	a.rec.Status = resp.StatusCode
	switch {
	case clientGone:
		a.rec.Status = usage.StatusClientClosed
	case rl.stopCtx.Err() != nil && upErr != nil:
		a.rec.ErrorType = "relay_shutdown"
	case idleFired.Load():
		a.rec.ErrorType = "upstream_idle_timeout"
	case upErr != nil:
		a.rec.ErrorType = "stream_interrupted"
		rl.log.Warn("upstream response cut short", "request_id", info.RequestID, "upstream", res.Upstream, "error", upErr)
	}
	rl.settle(a, resp, sx, tee)
	outcome = upstream.Outcome{
		InputTokens: a.rec.Usage.TotalInput(), OutputTokens: a.rec.Usage.OutputTokens,
		Failed: !clientGone && (upErr != nil || (sx != nil && sx.ErrorType() != "")),
	}
	rl.record(a, info)
}

// copyBody copies the upstream body to the client, flushing after every
// read on streams (an SSE event is flushed as soon as its bytes arrive; a
// stream is never held in memory), feeding the stream extractor, and
// capturing what the usage of a JSON answer needs (see capture).
func (rl *Relay) copyBody(w http.ResponseWriter, body io.Reader, stream bool, sx *usage.StreamExtractor, tee *capture, a *attempt, idle *time.Timer) (clientGone bool, upErr error) {
	bp := rl.bufs.Get().(*[]byte)
	defer rl.bufs.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			idle.Reset(rl.cfg.StreamIdleTimeout)
			if a != nil && a.firstByte.IsZero() {
				a.firstByte = rl.now()
			}
			if sx != nil {
				_, _ = sx.Write(buf[:n])
			}
			if tee != nil {
				tee.Write(buf[:n])
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return true, nil
			}
			if stream {
				if ferr := rc.Flush(); ferr != nil {
					return true, nil
				}
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// errInvalidUpstream is the error type recorded when the upstream answered
// 200 with something that is not a message (a proxy's HTML page, garbage).
const errInvalidUpstream = "invalid_upstream_response"

// isMessage reports whether body is a JSON Messages API message.
func isMessage(body []byte) bool {
	var m struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(body, &m) == nil && m.Type == "message"
}

// maxTee bounds the small answers the relay changes before the client
// sees them (a filtered model list, a batch with its URLs rewritten).
const maxTee = 8 << 20

// settle fills the record's usage from what the upstream reported, or
// estimates it (marking the record) when the upstream said nothing.
func (rl *Relay) settle(a *attempt, resp *http.Response, sx *usage.StreamExtractor, tee *capture) {
	rec := &a.rec
	if !a.firstByte.IsZero() {
		rec.TTFT = a.firstByte.Sub(a.start)
	}
	if sx != nil {
		rec.ResponseModel = sx.Model()
		if t := sx.ErrorType(); t != "" {
			rec.ErrorType = t
		}
		if sx.SawUsage() {
			rec.Usage = sx.Usage()
			if !sx.OutputFromDelta() && sx.DeltaBytes() > 0 {
				// Cut before message_delta: count what was streamed so far.
				rec.Usage.OutputTokens = max(rec.Usage.OutputTokens, tokenizer.EstimateBytes(sx.DeltaBytes()))
				rec.Estimated = true
			}
			return
		}
		if sx.Started() {
			// A real stream whose upstream reported no counts: estimate.
			rec.Usage = usage.Usage{InputTokens: rl.tok.EstimateRequest(a.body), OutputTokens: tokenizer.EstimateBytes(sx.DeltaBytes())}
			rec.Estimated = true
		} else if rec.ErrorType == "" && rec.Status != usage.StatusClientClosed {
			// 200 and event-stream, but no message: garbage, not an answer.
			rec.ErrorType = errInvalidUpstream
		}
		return
	}
	if tee == nil {
		return
	}
	if resp.StatusCode >= 400 {
		if typ, _, ok := usage.ErrorFromJSON(tee.bytes()); ok {
			rec.ErrorType = typ
		} else {
			rec.ErrorType = apierror.TypeFor(resp.StatusCode)
		}
		return
	}
	if !tee.whole() {
		// A huge answer: its usage is in the tail.
		if u, model, ok := tee.usageFromTail(); ok {
			rec.Usage, rec.ResponseModel = u, model
			return
		}
	} else if u, model, ok := usage.FromJSON(tee.bytes()); ok {
		rec.Usage, rec.ResponseModel = u, model
		return
	}
	// A message without counts, or an answer cut mid-body (by the
	// upstream, the idle timeout, a shutdown or the client leaving): the
	// upstream generated it and bills it, so estimate. Anything else with
	// a 200 (an HTML page, garbage) is no answer at all.
	cut := rec.ErrorType != "" || rec.Status == usage.StatusClientClosed
	if isMessage(tee.bytes()) || cut || (!tee.whole() && bytes.HasPrefix(bytes.TrimSpace(tee.bytes()), []byte("{"))) {
		rec.Usage = usage.Usage{InputTokens: rl.tok.EstimateRequest(a.body), OutputTokens: tokenizer.EstimateBytes(tee.total)}
		rec.Estimated = true
		return
	}
	rec.ErrorType = errInvalidUpstream
}

func (rl *Relay) record(a *attempt, info *middleware.Info) {
	now := rl.now()
	a.rec.Time = a.start.UTC()
	a.rec.Latency = now.Sub(a.start)
	a.rec.CostUSD = rl.cost(&a.rec)
	info.InputTokens, info.OutputTokens = a.rec.Usage.TotalInput(), a.rec.Usage.OutputTokens
	if a.reserved {
		rl.settleQuota(a.res, &a.rec)
		a.reserved = false
	}
	rl.metrics.record(&a.rec, rl.modelLabel(a.rec.Model))
	if err := rl.recorder.Record(a.rec); err != nil {
		rl.log.Error("usage record dropped", "request_id", a.rec.RequestID, "key_id", a.rec.KeyID, "error", err)
	}
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func randomSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}
