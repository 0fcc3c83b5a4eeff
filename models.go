package relay

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/upstream"
)

// serveModels relays GET /v1/models and /v1/models/{id}. A key limited to
// some models sees only those: the list is filtered and other ids are 404,
// so model discovery in Claude Code offers only what the key may use.
func (rl *Relay) serveModels(w http.ResponseWriter, r *http.Request, info *middleware.Info, one bool) {
	key := info.Key
	if len(key.AllowedModels) == 0 {
		rl.forward(w, r, info, upstream.Call{Client: r, AffinityKey: info.Key.ID}, nil, false)
		return
	}
	if one {
		id := strings.TrimPrefix(r.URL.Path, "/v1/models/")
		if !key.AllowsModel(id) {
			rl.fail(w, r, apierror.New(http.StatusNotFound, "model: "+id))
			return
		}
		rl.forward(w, r, info, upstream.Call{Client: r, AffinityKey: info.Key.ID}, nil, false)
		return
	}
	rw := &captureWriter{header: make(http.Header)}
	rl.forward(rw, r, info, upstream.Call{Client: r, AffinityKey: info.Key.ID}, nil, false)
	body := rw.buf.Bytes()
	if rw.status == http.StatusOK {
		if filtered, ok := filterModels(body, key.AllowsModel); ok {
			body = filtered
		}
	}
	for k, v := range rw.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rw.status)
	_, _ = w.Write(body)
}

// filterModels keeps the entries of a model list that allow accepts. Only
// "data", "first_id" and "last_id" change; other fields pass as they were.
func filterModels(body []byte, allow func(string) bool) ([]byte, bool) {
	var list map[string]json.RawMessage
	if json.Unmarshal(body, &list) != nil {
		return nil, false
	}
	var data []json.RawMessage
	if json.Unmarshal(list["data"], &data) != nil {
		return nil, false
	}
	kept := make([]json.RawMessage, 0, len(data))
	var first, last string
	for _, m := range data {
		var v struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &v) == nil && allow(v.ID) {
			kept = append(kept, m)
			if first == "" {
				first = v.ID
			}
			last = v.ID
		}
	}
	list["data"], _ = json.Marshal(kept)
	list["first_id"], _ = json.Marshal(nullable(first))
	list["last_id"], _ = json.Marshal(nullable(last))
	out, err := json.Marshal(list)
	return out, err == nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// captureWriter collects a small response so it can be changed before the
// client sees it.
type captureWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}
func (c *captureWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.buf.Len()+len(p) > maxTee {
		return 0, io.ErrShortWrite
	}
	return c.buf.Write(p)
}

// servePassthrough relays the batches and files APIs untouched, without
// token accounting (batch results are billed by Anthropic per batch).
func (rl *Relay) servePassthrough(w http.ResponseWriter, r *http.Request, info *middleware.Info) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody && r.Method != http.MethodGet && r.Method != http.MethodHead {
		var e *apierror.Error
		if body, e = rl.readBody(w, r); e != nil {
			rl.fail(w, r, e)
			return
		}
	}
	// Batches and files live on the account that created them: key
	// affinity keeps one key's objects on one upstream while it is healthy.
	rl.forward(w, r, info, upstream.Call{Client: r, Body: body, AffinityKey: info.Key.ID}, nil, false)
}

func isBatchPath(p string) bool { return strings.HasPrefix(p, "/v1/messages/batches") }

func isJSON(h http.Header) bool { return strings.HasPrefix(h.Get("Content-Type"), "application/json") }

// relayRewritten sends a batch object with its absolute results_url (and
// any other absolute upstream URL) pointing at the relay, so a client
// fetches results through the relay with its relay key.
func (rl *Relay) relayRewritten(w http.ResponseWriter, r *http.Request, resp *http.Response, from string) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTee+1))
	if err != nil || len(body) > maxTee {
		rl.fail(w, r, apierror.New(http.StatusBadGateway, "the upstream answer could not be read"))
		return
	}
	to := rl.publicBase(r)
	body = bytes.ReplaceAll(body, []byte(jsonEscapeSlashes(from)), []byte(jsonEscapeSlashes(to)))
	body = bytes.ReplaceAll(body, []byte(from), []byte(to))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

func jsonEscapeSlashes(s string) string { return strings.ReplaceAll(s, "/", `\/`) }

// publicBase is the relay's base URL as the client reached it: PublicURL
// when set, else scheme and Host of the request plus the prefix a host
// stripped before mounting the proxy.
func (rl *Relay) publicBase(r *http.Request) string {
	if rl.public != nil {
		return rl.public.String()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	prefix := ""
	if uri := r.RequestURI; uri != "" {
		if i := strings.IndexByte(uri, '?'); i >= 0 {
			uri = uri[:i]
		}
		prefix = strings.TrimSuffix(uri, r.URL.Path)
	}
	return scheme + "://" + r.Host + prefix
}
