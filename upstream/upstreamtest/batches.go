package upstreamtest

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// batch is a Message Batch the fake accepted. It is done the moment it
// exists: a create answers in_progress, as the real API does, and every
// later look answers ended, so that tests need not poll.
type batch struct {
	id      string
	created time.Time
	ended   time.Time
	items   []batchItem
}

type batchItem struct {
	CustomID string `json:"custom_id"`
	Params   struct {
		Model string `json:"model"`
	} `json:"params"`
}

// batchJSON is the Message Batch object, fields in the real API's order.
type batchJSON struct {
	ID                string        `json:"id"`
	Type              string        `json:"type"`
	ProcessingStatus  string        `json:"processing_status"`
	RequestCounts     requestCounts `json:"request_counts"`
	EndedAt           *string       `json:"ended_at"`
	CreatedAt         string        `json:"created_at"`
	ExpiresAt         string        `json:"expires_at"`
	ArchivedAt        *string       `json:"archived_at"`
	CancelInitiatedAt *string       `json:"cancel_initiated_at"`
	ResultsURL        *string       `json:"results_url"`
}

type requestCounts struct {
	Processing int `json:"processing"`
	Succeeded  int `json:"succeeded"`
	Errored    int `json:"errored"`
	Canceled   int `json:"canceled"`
	Expired    int `json:"expired"`
}

// serveBatches answers the Message Batches API: create, list, retrieve and
// results. A retrieved batch carries an absolute results_url built from
// the request's Host, which is exactly what a relay has to rewrite.
func (s *Server) serveBatches(w http.ResponseWriter, r *http.Request, reqID string, body []byte, tooLarge bool) {
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/v1/messages/batches"), "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case id == "":
		if !s.allow(w, r, reqID, http.MethodGet, http.MethodPost) {
			return
		}
		if r.Method == http.MethodPost {
			s.createBatch(w, reqID, body, tooLarge)
			return
		}
		s.stateMu.Lock()
		list := make([]json.RawMessage, 0, len(s.batchIDs))
		ids := make([]string, 0, len(s.batchIDs))
		for i := len(s.batchIDs) - 1; i >= 0; i-- { // newest first
			ids = append(ids, s.batchIDs[i])
			list = append(list, s.batchObject(r, s.batches[s.batchIDs[i]], false))
		}
		s.stateMu.Unlock()
		s.writeList(w, list, ids)
		return
	case sub != "" && sub != "results":
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "Not Found")
		return
	}
	if !s.allow(w, r, reqID, http.MethodGet) {
		return
	}
	s.stateMu.Lock()
	b := s.batches[id]
	var out []byte
	if b != nil && sub == "" {
		out = s.batchObject(r, b, false)
	}
	s.stateMu.Unlock()
	switch {
	case b == nil:
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "Batch not found: "+id)
	case sub == "":
		s.writeJSON(w, out)
	default:
		var lines []byte
		for _, it := range b.items {
			lines = append(lines, `{"custom_id":`...)
			lines = appendString(lines, it.CustomID)
			lines = append(lines, `,"result":{"type":"succeeded","message":`...)
			lines = append(lines, s.messageBody(appendString(nil, it.Params.Model), withUsage)...)
			lines = append(lines, "}}\n"...)
		}
		w.Header()["Content-Type"] = []string{"application/binary"}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(lines)
	}
}

func (s *Server) createBatch(w http.ResponseWriter, reqID string, body []byte, tooLarge bool) {
	if tooLarge {
		s.writeError(w, reqID, http.StatusRequestEntityTooLarge, "request_too_large", "")
		return
	}
	var req struct {
		Requests []batchItem `json:"requests"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "There was an error parsing the body of your request. Please check that it is valid JSON.")
		return
	}
	if len(req.Requests) == 0 {
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "requests: List should have at least 1 item after validation, not 0")
		return
	}
	now := s.cfg.Now().UTC()
	s.stateMu.Lock()
	b := &batch{id: s.newID("msgbatch_01"), created: now, ended: now, items: req.Requests}
	s.batches[b.id] = b
	s.batchIDs = append(s.batchIDs, b.id)
	out := s.batchObject(nil, b, true)
	s.stateMu.Unlock()
	s.writeJSON(w, out)
}

// batchObject renders b as just created (in progress) or as ended.
func (s *Server) batchObject(r *http.Request, b *batch, inProgress bool) []byte {
	o := batchJSON{
		ID:        b.id,
		Type:      "message_batch",
		CreatedAt: b.created.Format(time.RFC3339Nano),
		ExpiresAt: b.created.Add(24 * time.Hour).Format(time.RFC3339Nano),
	}
	if inProgress {
		o.ProcessingStatus = "in_progress"
		o.RequestCounts.Processing = len(b.items)
	} else {
		o.ProcessingStatus = "ended"
		o.RequestCounts.Succeeded = len(b.items)
		ended := b.ended.Format(time.RFC3339Nano)
		o.EndedAt = &ended
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		u := scheme + "://" + r.Host + "/v1/messages/batches/" + b.id + "/results"
		o.ResultsURL = &u
	}
	out, _ := json.Marshal(o)
	return out
}

// writeList answers a list of the API's cursor shape, all in one page.
func (s *Server) writeList(w http.ResponseWriter, data []json.RawMessage, ids []string) {
	var first, last *string
	if n := len(ids); n > 0 {
		first, last = &ids[0], &ids[n-1]
	}
	out, _ := json.Marshal(struct {
		Data    []json.RawMessage `json:"data"`
		HasMore bool              `json:"has_more"`
		FirstID *string           `json:"first_id"`
		LastID  *string           `json:"last_id"`
	}{data, false, first, last})
	s.writeJSON(w, out)
}
