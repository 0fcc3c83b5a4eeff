package upstreamtest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a fake Anthropic API. It speaks the real wire format so that
// the relay, the official SDKs and Claude Code can be tested against it
// without the network, and it misbehaves on demand ([Fault]) so that the
// relay's retry and error paths get exercised too.
//
// A Server is safe for concurrent use.
type Server struct {
	// URL is the base URL of the started server, like
	// http://127.0.0.1:12345, without a trailing slash; empty until Start.
	URL string

	ts      *httptest.Server
	handler http.Handler

	cfg     Config
	usage   Usage
	answers answers
	models  []string
	// modelJSON holds each model object of GET /v1/models, built once; it
	// doubles as the set of known models.
	modelJSON map[string][]byte

	// Header values shared by every response; never modified.
	orgID, ctJSON, ctSSE, noCache []string
	reqPrefix                     string

	requests, messages, streams, faulted atomic.Int64

	faultMu sync.Mutex
	queue   []Fault
	sticky  *Fault
	// faulty is set while a fault is queued or sticky, so that the usual
	// request does not take faultMu at all.
	faulty atomic.Bool

	recMu sync.Mutex
	recs  []ReceivedRequest

	stateMu  sync.Mutex
	batches  map[string]*batch
	batchIDs []string
	files    map[string]*file
	fileIDs  []string
	nextID   int64

	bufs sync.Pool

	done      chan struct{}
	closeOnce sync.Once
}

// ReceivedRequest is one request as the fake saw it, so that tests can
// check what the relay forwarded: headers stripped or kept, query and body
// untouched.
type ReceivedRequest struct {
	Method   string
	Path     string
	RawQuery string
	Host     string
	Header   http.Header
	Body     []byte
}

// Stats counts what the fake answered since New or the last Reset.
type Stats struct {
	// Requests is every request, whatever its answer.
	Requests int64
	// Messages is every POST /v1/messages answered 200 with a message;
	// Streams is the streamed share of them.
	Messages int64
	Streams  int64
	// Faulted is every request that met a non-zero Fault.
	Faulted int64
}

// New starts a fake on a loopback port; call Close when done.
func New(cfg Config) *Server {
	s := NewUnstarted(cfg)
	s.Start()
	return s
}

// NewUnstarted builds a fake without listening anywhere: start it with
// Start or StartTLS, or serve Handler on a listener of your own (the load
// tool does).
func NewUnstarted(cfg Config) *Server {
	if cfg.Usage == nil {
		u := DefaultUsage()
		cfg.Usage = &u
	}
	if cfg.Text == "" {
		cfg.Text = DefaultText
	}
	if cfg.Deltas <= 0 {
		cfg.Deltas = DefaultDeltas
	}
	if cfg.MessageID == "" {
		cfg.MessageID = DefaultMessageID
	}
	if cfg.StopReason == "" {
		cfg.StopReason = DefaultStopReason
	}
	if cfg.OrganizationID == "" {
		cfg.OrganizationID = DefaultOrganizationID
	}
	if cfg.Models == nil {
		cfg.Models = DefaultModels()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:       cfg,
		usage:     *cfg.Usage,
		models:    append([]string(nil), cfg.Models...),
		modelJSON: make(map[string][]byte, len(cfg.Models)),
		orgID:     []string{cfg.OrganizationID},
		ctJSON:    []string{"application/json"},
		ctSSE:     []string{"text/event-stream; charset=utf-8"},
		noCache:   []string{"no-cache"},
		reqPrefix: "req_011UT" + strconv.FormatUint(rand.Uint64()|1<<63, 36)[:8],
		batches:   make(map[string]*batch),
		files:     make(map[string]*file),
		done:      make(chan struct{}),
	}
	s.cfg.Usage = &s.usage
	s.cfg.Header = canonicalHeader(cfg.Header)
	s.cfg.Models = s.models
	s.cfg.Faults = nil
	for _, m := range s.models {
		s.modelJSON[m] = appendModel(nil, m)
	}
	s.answers = buildAnswers(&s.cfg, s.usage)
	s.Enqueue(cfg.Faults...)
	s.SetDefault(cfg.Default)
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s
}

// Start listens on a loopback port and sets URL. It panics if the server
// was started before, as httptest does.
func (s *Server) Start() {
	if s.ts != nil {
		panic("upstreamtest: server already started")
	}
	s.ts = httptest.NewServer(s.handler)
	s.URL = s.ts.URL
}

// StartTLS is Start with TLS; Client trusts the server's certificate.
func (s *Server) StartTLS() {
	if s.ts != nil {
		panic("upstreamtest: server already started")
	}
	s.ts = httptest.NewTLSServer(s.handler)
	s.URL = s.ts.URL
}

// Client is an *http.Client for the started server (it trusts StartTLS's
// certificate).
func (s *Server) Client() *http.Client {
	if s.ts == nil {
		return http.DefaultClient
	}
	return s.ts.Client()
}

// Handler serves the fake API, for mounting it on a listener or mux of your
// own. Cut streams and dropped connections panic with http.ErrAbortHandler,
// which net/http turns into an abrupt close: a recovering middleware in
// front of it must let that panic through.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the server if it was started, first ending every delay and
// stream still running (their connections are closed abruptly), so that
// Close does not wait for a fault's long Latency.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
	if s.ts != nil {
		s.ts.Close()
	}
}

// Enqueue queues one-shot faults: each is used up by one request, first in
// first out, before the sticky default applies again.
func (s *Server) Enqueue(faults ...Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for _, f := range faults {
		s.queue = append(s.queue, cloneFault(f))
	}
	s.faulty.Store(len(s.queue) > 0 || s.sticky != nil)
}

// SetDefault sets the sticky fault that every request meets when the queue
// is empty; the zero Fault removes it.
func (s *Server) SetDefault(f Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.sticky = nil
	if !f.IsZero() {
		c := cloneFault(f)
		s.sticky = &c
	}
	s.faulty.Store(len(s.queue) > 0 || s.sticky != nil)
}

// ClearFaults empties the queue and removes the sticky default.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.queue, s.sticky = nil, nil
	s.faulty.Store(false)
}

// Pending is the number of queued faults not used up yet; a test that
// queued faults can check that every one was met.
func (s *Server) Pending() int {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return len(s.queue)
}

// canonicalHeader copies h with canonical keys, so that headers given as
// map literals with lower-case names replace rather than duplicate the
// fake's own.
func canonicalHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		ck := http.CanonicalHeaderKey(k)
		out[ck] = append(out[ck], v...)
	}
	return out
}

// cloneFault copies what a caller could change after handing f over.
func cloneFault(f Fault) Fault {
	f.Header = canonicalHeader(f.Header)
	if f.Body != nil {
		f.Body = bytes.Clone(f.Body)
	}
	return f
}

// nextFault returns the fault for this request, or nil. The returned Fault
// is shared with no one else and is only read.
func (s *Server) nextFault() *Fault {
	if !s.faulty.Load() {
		return nil
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	var f *Fault
	switch {
	case len(s.queue) > 0:
		q := s.queue[0]
		s.queue[0] = Fault{}
		s.queue = s.queue[1:]
		f = &q
	case s.sticky != nil:
		f = s.sticky // immutable once set: SetDefault replaces the pointer
	}
	s.faulty.Store(len(s.queue) > 0 || s.sticky != nil)
	if f != nil && f.IsZero() {
		return nil
	}
	return f
}

// Requests returns the requests received so far, oldest first. The slice
// is a copy; its headers and bodies must not be changed.
func (s *Server) Requests() []ReceivedRequest {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return append([]ReceivedRequest(nil), s.recs...)
}

// LastRequest returns the latest request received, if any.
func (s *Server) LastRequest() (ReceivedRequest, bool) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if len(s.recs) == 0 {
		return ReceivedRequest{}, false
	}
	return s.recs[len(s.recs)-1], true
}

// Count is the number of requests received, recorded or not.
func (s *Server) Count() int64 { return s.requests.Load() }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests: s.requests.Load(),
		Messages: s.messages.Load(),
		Streams:  s.streams.Load(),
		Faulted:  s.faulted.Load(),
	}
}

// Reset forgets the recorded requests and zeroes the counters, so that one
// server can serve several subtests. Faults, batches and files stay.
func (s *Server) Reset() {
	s.recMu.Lock()
	s.recs = nil
	s.recMu.Unlock()
	s.requests.Store(0)
	s.messages.Store(0)
	s.streams.Store(0)
	s.faulted.Store(0)
}

// ExpectedUsage is the usage every message reports (Config.Usage, or
// DefaultUsage), what a relay should have counted for it.
func (s *Server) ExpectedUsage() Usage { return s.usage }

// Text is the answer text of every message.
func (s *Server) Text() string { return s.cfg.Text }

// Models is the model list of GET /v1/models.
func (s *Server) Models() []string { return append([]string(nil), s.models...) }

// sleep waits d unless the client goes away (false) or the server closes
// (the connection is then cut, so that Close need not wait).
func (s *Server) sleep(ctx context.Context, d time.Duration, timer **time.Timer) bool {
	if *timer == nil {
		*timer = time.NewTimer(d)
	} else {
		(*timer).Reset(d)
	}
	select {
	case <-(*timer).C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		panic(http.ErrAbortHandler)
	}
}

// requestID makes a request id in the real API's shape, unique per server.
func (s *Server) requestID(n int64) string {
	var b [40]byte
	out := append(b[:0], s.reqPrefix...)
	digits := strconv.AppendInt(b[32:32], n, 10)
	for i := len(digits); i < 8; i++ {
		out = append(out, '0')
	}
	return string(append(out, digits...))
}

const maxPooledBuffer = 1 << 20

// readBody reads at most MaxBodyBytes+1 bytes into a pooled buffer; the
// caller returns it with putBuffer.
func (s *Server) readBody(r *http.Request) (*bytes.Buffer, bool) {
	buf, _ := s.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	if r.Body == nil || r.Body == http.NoBody {
		return buf, false
	}
	if cl := r.ContentLength; cl > 0 && cl <= MaxBodyBytes {
		buf.Grow(int(cl) + 1)
	}
	_, _ = buf.ReadFrom(io.LimitReader(r.Body, MaxBodyBytes+1))
	return buf, buf.Len() > MaxBodyBytes
}

func (s *Server) putBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBuffer {
		s.bufs.Put(buf)
	}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := s.requestID(s.requests.Add(1))
	h := w.Header()
	h["Request-Id"] = []string{reqID}
	h["Anthropic-Organization-Id"] = s.orgID
	for k, v := range s.cfg.Header {
		h[k] = v
	}

	buf, tooLarge := s.readBody(r)
	defer s.putBuffer(buf)
	body := buf.Bytes()
	if !s.cfg.DontRecord {
		rec := ReceivedRequest{
			Method:   r.Method,
			Path:     r.URL.Path,
			RawQuery: r.URL.RawQuery,
			Host:     r.Host,
			Header:   r.Header.Clone(),
			Body:     bytes.Clone(body),
		}
		s.recMu.Lock()
		s.recs = append(s.recs, rec)
		s.recMu.Unlock()
	}

	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	f := s.nextFault()
	latency := s.cfg.Latency
	if f != nil {
		s.faulted.Add(1)
		for k, v := range f.Header {
			h[k] = v
		}
		if f.RetryAfter > 0 {
			ms := (f.RetryAfter + time.Millisecond - 1) / time.Millisecond
			secs := (f.RetryAfter + time.Second - 1) / time.Second
			h["Retry-After"] = []string{strconv.FormatInt(int64(secs), 10)}
			h["Retry-After-Ms"] = []string{strconv.FormatInt(int64(ms), 10)}
		}
		if f.Latency != 0 {
			latency = f.Latency
		}
	}
	if latency > 0 && !s.sleep(r.Context(), latency, &timer) {
		return
	}
	if f != nil {
		switch {
		case f.Drop:
			panic(http.ErrAbortHandler)
		case f.Body != nil:
			s.serveRaw(w, r, body, f)
			return
		case f.Status >= 400:
			errType := f.ErrorType
			if errType == "" {
				errType = ErrorTypeFor(f.Status)
			}
			s.writeError(w, reqID, f.Status, errType, f.Message)
			return
		}
	}
	if !s.authorized(r) {
		msg := "invalid x-api-key"
		if r.Header.Get("X-Api-Key") == "" && r.Header.Get("Authorization") == "" {
			msg = "x-api-key header is required"
		}
		s.writeError(w, reqID, http.StatusUnauthorized, "authentication_error", msg)
		return
	}
	s.route(w, r, reqID, body, tooLarge, f, &timer)
}

// serveRaw sends a fault's raw body.
func (s *Server) serveRaw(w http.ResponseWriter, r *http.Request, body []byte, f *Fault) {
	h := w.Header()
	switch {
	case f.ContentType != "":
		h["Content-Type"] = []string{f.ContentType}
	case r.URL.Path == "/v1/messages" && func() bool { sn, _ := sniff(body); return sn.stream }():
		h["Content-Type"] = s.ctSSE
		h["Cache-Control"] = s.noCache
	default:
		h["Content-Type"] = s.ctJSON
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	h["Content-Length"] = []string{strconv.Itoa(len(f.Body))}
	w.WriteHeader(status)
	_, _ = w.Write(f.Body)
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.APIKey == "" {
		return true
	}
	if k := r.Header.Get("X-Api-Key"); k != "" && subtle.ConstantTimeCompare([]byte(k), []byte(s.cfg.APIKey)) == 1 {
		return true
	}
	a := r.Header.Get("Authorization")
	return len(a) > 7 && strings.EqualFold(a[:7], "bearer ") &&
		subtle.ConstantTimeCompare([]byte(a[7:]), []byte(s.cfg.APIKey)) == 1
}

// writeError answers in the Anthropic error shape; an empty message means
// the default one for errType.
func (s *Server) writeError(w http.ResponseWriter, reqID string, status int, errType, message string) {
	if message == "" {
		message = defaultMessage(errType)
	}
	b := appendErrorBody(make([]byte, 0, 128), errType, message, reqID)
	h := w.Header()
	h["Content-Type"] = s.ctJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeJSON answers 200 with a JSON body.
func (s *Server) writeJSON(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h["Content-Type"] = s.ctJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, reqID string, body []byte, tooLarge bool, f *Fault, timer **time.Timer) {
	path := r.URL.Path
	switch {
	case path == "/v1/messages":
		if s.allow(w, r, reqID, http.MethodPost) {
			s.serveMessages(w, r, reqID, body, tooLarge, f, timer)
		}
	case path == "/v1/messages/count_tokens":
		if s.allow(w, r, reqID, http.MethodPost) {
			s.serveCountTokens(w, reqID, body, tooLarge)
		}
	case path == "/v1/models":
		if s.allow(w, r, reqID, http.MethodGet) {
			s.serveModelList(w, r, reqID)
		}
	case strings.HasPrefix(path, "/v1/models/"):
		if s.allow(w, r, reqID, http.MethodGet) {
			s.serveModel(w, reqID, path[len("/v1/models/"):])
		}
	case path == "/v1/messages/batches" || strings.HasPrefix(path, "/v1/messages/batches/"):
		s.serveBatches(w, r, reqID, body, tooLarge)
	case path == "/v1/files" || strings.HasPrefix(path, "/v1/files/"):
		s.serveFiles(w, r, reqID, body, tooLarge)
	default:
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "Not Found")
	}
}

// allow answers 405 unless r uses one of methods.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, reqID string, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header()["Allow"] = []string{strings.Join(methods, ", ")}
	s.writeError(w, reqID, http.StatusMethodNotAllowed, "invalid_request_error", "Method Not Allowed")
	return false
}

// checkBody reads model and stream from a message or count_tokens body,
// answering the 4xx the real API would when it cannot.
func (s *Server) checkBody(w http.ResponseWriter, reqID string, body []byte, tooLarge bool) (sniffed, bool) {
	if tooLarge {
		s.writeError(w, reqID, http.StatusRequestEntityTooLarge, "request_too_large", "")
		return sniffed{}, false
	}
	sn, err := sniff(body)
	switch {
	case err == errNotObject:
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "Input should be a valid dictionary or object to extract fields from")
	case err != nil:
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "There was an error parsing the body of your request. Please check that it is valid JSON.")
	case !sn.hasModel:
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "model: Field required")
	case sn.modelNotString:
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "model: Input should be a valid string")
	case sn.streamNotBool:
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "stream: Input should be a valid boolean")
	case s.cfg.RejectUnknownModels && s.modelJSON[modelString(&sn)] == nil:
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "model: "+modelString(&sn))
	default:
		return sn, true
	}
	return sn, false
}

func (s *Server) serveMessages(w http.ResponseWriter, r *http.Request, reqID string, body []byte, tooLarge bool, f *Fault, timer **time.Timer) {
	sn, ok := s.checkBody(w, reqID, body, tooLarge)
	if !ok {
		return
	}
	s.messages.Add(1)
	if sn.stream {
		s.streams.Add(1)
		s.serveStream(r.Context(), w, modelBytes(&sn), f, timer)
		return
	}
	s.serveJSON(w, modelBytes(&sn), f)
}

func (s *Server) serveCountTokens(w http.ResponseWriter, reqID string, body []byte, tooLarge bool) {
	if _, ok := s.checkBody(w, reqID, body, tooLarge); !ok {
		return
	}
	n := s.cfg.CountTokens
	if n <= 0 {
		n = max(int64(len(body))/4, 1)
	}
	b := appendInt([]byte(`{"input_tokens":`), n)
	s.writeJSON(w, append(b, '}'))
}

// newID makes an id with prefix, unique within this server.
func (s *Server) newID(prefix string) string {
	s.nextID++ // stateMu held by the caller
	id := strconv.FormatInt(s.nextID, 10)
	return prefix + strings.Repeat("0", max(0, 20-len(id))) + id
}
