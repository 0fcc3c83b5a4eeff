package upstreamtest

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// file is an upload the fake keeps, content and all, so that a test can
// upload through the relay and read the same bytes back.
type file struct {
	meta    fileJSON
	content []byte
}

type fileJSON struct {
	ID           string `json:"id"`
	Type         string `json:"type"`
	Filename     string `json:"filename"`
	MimeType     string `json:"mime_type"`
	SizeBytes    int64  `json:"size_bytes"`
	CreatedAt    string `json:"created_at"`
	Downloadable bool   `json:"downloadable"`
}

// serveFiles answers a small Files API: upload (multipart, field "file"),
// list, metadata, content and delete. Uploads count toward MaxBodyBytes
// here, unlike the real API's larger limit.
func (s *Server) serveFiles(w http.ResponseWriter, r *http.Request, reqID string, body []byte, tooLarge bool) {
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/v1/files"), "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case id == "":
		if !s.allow(w, r, reqID, http.MethodGet, http.MethodPost) {
			return
		}
		if r.Method == http.MethodPost {
			s.uploadFile(w, r, reqID, body, tooLarge)
			return
		}
		s.stateMu.Lock()
		list := make([]json.RawMessage, 0, len(s.fileIDs))
		ids := make([]string, 0, len(s.fileIDs))
		for i := len(s.fileIDs) - 1; i >= 0; i-- { // newest first
			m, _ := json.Marshal(s.files[s.fileIDs[i]].meta)
			ids = append(ids, s.fileIDs[i])
			list = append(list, m)
		}
		s.stateMu.Unlock()
		s.writeList(w, list, ids)
		return
	case sub != "" && sub != "content":
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "Not Found")
		return
	}
	methods := []string{http.MethodGet}
	if sub == "" {
		methods = append(methods, http.MethodDelete)
	}
	if !s.allow(w, r, reqID, methods...) {
		return
	}
	s.stateMu.Lock()
	f := s.files[id]
	if f != nil && r.Method == http.MethodDelete {
		delete(s.files, id)
		s.fileIDs = without(s.fileIDs, id)
	}
	s.stateMu.Unlock()
	switch {
	case f == nil:
		s.writeError(w, reqID, http.StatusNotFound, "not_found_error", "File not found: "+id)
	case r.Method == http.MethodDelete:
		out, _ := json.Marshal(map[string]string{"id": id, "type": "file_deleted"})
		s.writeJSON(w, out)
	case sub == "content":
		w.Header()["Content-Type"] = []string{f.meta.MimeType}
		w.Header()["Content-Length"] = []string{strconv.Itoa(len(f.content))}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(f.content)
	default:
		out, _ := json.Marshal(f.meta)
		s.writeJSON(w, out)
	}
}

func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request, reqID string, body []byte, tooLarge bool) {
	if tooLarge {
		s.writeError(w, reqID, http.StatusRequestEntityTooLarge, "request_too_large", "")
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "Content-Type must be multipart/form-data")
		return
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "file: Field required")
			return
		}
		if part.FormName() != "file" {
			continue
		}
		content, err := io.ReadAll(part)
		if err != nil {
			s.writeError(w, reqID, http.StatusBadRequest, "invalid_request_error", "file: could not be read")
			return
		}
		ct := part.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		s.stateMu.Lock()
		f := &file{content: content, meta: fileJSON{
			ID:           s.newID("file_011"),
			Type:         "file",
			Filename:     part.FileName(),
			MimeType:     ct,
			SizeBytes:    int64(len(content)),
			CreatedAt:    s.cfg.Now().UTC().Format(time.RFC3339Nano),
			Downloadable: true,
		}}
		s.files[f.meta.ID] = f
		s.fileIDs = append(s.fileIDs, f.meta.ID)
		s.stateMu.Unlock()
		out, _ := json.Marshal(f.meta)
		s.writeJSON(w, out)
		return
	}
}

func without(list []string, s string) []string {
	if i := indexOf(list, s); i >= 0 {
		return append(list[:i:i], list[i+1:]...)
	}
	return list
}
